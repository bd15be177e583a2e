//! The in-memory catalog and the statement interpreter (sessions, transactions, app locks).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::SqlError;
use crate::sql::{Agg, CmpOp, Cond, Expr, ObjName, Parsed, SelItem, Select, Stmt};
use crate::types::{cmp_ci, Column, ColumnDefault, SqlType, Value};
use crate::wire::OutCol;

/// A stored row.
pub type Row = Vec<Value>;

/// Lowercased (database, schema, table).
pub type TableKey = (String, String, String);

/// An in-memory table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Schema name as declared.
    pub schema: String,
    /// Table name as declared.
    pub name: String,
    /// Columns.
    pub columns: Vec<Column>,
    /// Committed rows in insertion order.
    pub rows: Vec<Row>,
    /// Next IDENTITY value.
    pub next_identity: i64,
    /// UNIQUE / PRIMARY KEY column sets.
    pub uniques: Vec<Vec<usize>>,
    /// OBJECT_ID value.
    pub object_id: i32,
    /// `sys.objects.create_date`, as DATETIME2 ticks (a table created again gets a new one).
    pub created: i64,
    /// Throughput mode: bulk loads are decoded and counted but rows are not stored.
    pub bulk_count_only: bool,
    /// Throughput mode for reads (set by `TestServer::fill_synthetic`): pre-encoded rows.
    /// Any write to the table ([`Catalog::table_mut`]) ends it.
    pub synthetic: Option<Arc<Synthetic>>,
    /// Whether `rows` are in ascending order of the primary key (the clustered index order a
    /// keyset page seeks on); found out on the first seek, forgotten on any write.
    pub key_order: KeyOrder,
}

/// Cached answers to "are the rows sorted by this column" ([`Table::key_order`]): per (column,
/// strictly), for the row count they were found for.
#[derive(Debug, Default)]
pub struct KeyOrder(Mutex<Vec<(usize, bool, usize, bool)>>);

impl Clone for KeyOrder {
    /// A copied table finds out again.
    fn clone(&self) -> Self {
        KeyOrder::default()
    }
}

impl KeyOrder {
    /// True when `rows` strictly increase in integer column `col` (no NULLs).
    fn sorted(&self, rows: &[Row], col: usize) -> bool {
        self.ordered(rows, col, true)
    }

    /// True when `rows` increase (`strict`) or never decrease in integer column `col` (no
    /// NULLs).
    fn ordered(&self, rows: &[Row], col: usize, strict: bool) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(_, _, _, sorted)) = g.iter().find(|e| e.0 == col && e.1 == strict && e.2 == rows.len()) {
            return sorted;
        }
        let key = |r: &Row| match r.get(col) {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        };
        let sorted = rows.iter().all(|r| key(r).is_some()) && rows.windows(2).all(|w| if strict { key(&w[0]) < key(&w[1]) } else { key(&w[0]) <= key(&w[1]) });
        g.retain(|e| !(e.0 == col && e.1 == strict));
        g.push((col, strict, rows.len(), sorted));
        sorted
    }
}

impl Table {
    /// Index of a column by case-insensitive name.
    pub fn col_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// A database: tables by lowercased (schema, name).
#[derive(Debug, Clone, Default)]
pub struct Database {
    /// Name as created.
    pub name: String,
    /// Tables.
    pub tables: BTreeMap<(String, String), Table>,
    /// `DB_ID()` (instance-local).
    pub id: i32,
    /// `sys.databases.create_date` as DATETIME2 ticks: set when the database is created or
    /// restored.
    pub created: i64,
    /// `sys.database_recovery_status.database_guid`.
    pub guid: String,
    /// `sys.database_recovery_status.recovery_fork_guid`: a new one after every restore.
    pub recovery_fork: String,
}

/// All databases of the server, and what the instance says about itself.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Databases by lowercased name.
    pub dbs: BTreeMap<String, Database>,
    /// `@@SERVERNAME` (sys.servers' local entry: it keeps its value when the host is renamed).
    pub server_name: String,
    /// `SERVERPROPERTY('MachineName')`, also `SERVERPROPERTY('ServerName')` (the host's current name).
    pub machine_name: String,
    next_object_id: i32,
    next_db_id: i32,
    /// The last creation stamp given, so that stamps strictly increase.
    last_stamp: i64,
    /// Keyset pages scan and sort the whole table instead of seeking on the primary key (to
    /// measure what the seek saves; see `TestServer::set_index_seek`).
    pub no_index_seek: bool,
    /// SELECTs answered by [`keyset_seek`] (`Stats::index_seeks`).
    pub index_seeks: std::sync::atomic::AtomicU64,
}

/// Ticks of one millisecond (DATETIME2 ticks are 100 ns).
const TICKS_PER_MS: i64 = 10_000;

/// A new GUID in SQL Server's text form (random enough for a test server).
pub fn new_guid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (mix(t ^ (n << 32) ^ std::process::id() as u64), mix(t.rotate_left(17) ^ n));
    format!("{:08X}-{:04X}-{:04X}-{:04X}-{:012X}", a >> 32, (a >> 16) & 0xFFFF, a & 0xFFFF, b >> 48, b & 0xFFFF_FFFF_FFFF)
}

impl Catalog {
    /// A creation time: now, to the millisecond, and later than every stamp given before.
    pub fn stamp(&mut self) -> i64 {
        let now = match Value::now() {
            Value::DateTime2(t) => t - t.rem_euclid(TICKS_PER_MS),
            _ => 0,
        };
        self.last_stamp = now.max(self.last_stamp + TICKS_PER_MS);
        self.last_stamp
    }

    /// A new database `name` (not yet in the catalog) with its own ID, creation time and GUIDs.
    pub fn new_database(&mut self, name: &str) -> Database {
        self.next_db_id += 1;
        let created = self.stamp();
        Database { name: name.to_string(), tables: BTreeMap::new(), id: 4 + self.next_db_id, created, guid: new_guid(), recovery_fork: new_guid() }
    }

    /// Creates a database if missing.
    pub fn ensure_db(&mut self, name: &str) -> &mut Database {
        let k = name.to_lowercase();
        if !self.dbs.contains_key(&k) {
            let d = self.new_database(name);
            self.dbs.insert(k.clone(), d);
        }
        self.dbs.entry(k).or_default()
    }

    /// Creates (or replaces) a table; a replaced table is a new object (new OBJECT_ID and
    /// creation time, IDENTITY back at its seed).
    pub fn create_table(&mut self, db: &str, schema: &str, name: &str, columns: Vec<Column>, uniques: Vec<Vec<usize>>) {
        self.next_object_id += 1;
        let object_id = 1_000_000 + self.next_object_id;
        let created = self.stamp();
        let t = Table { schema: schema.into(), name: name.into(), columns, rows: Vec::new(), next_identity: 1, uniques, object_id, created, bulk_count_only: false, synthetic: None, key_order: KeyOrder::default() };
        self.ensure_db(db).tables.insert((schema.to_lowercase(), name.to_lowercase()), t);
    }

    /// Drops a table; false when there is none.
    pub fn drop_table(&mut self, k: &TableKey) -> bool {
        self.dbs.get_mut(&k.0).and_then(|d| d.tables.remove(&(k.1.clone(), k.2.clone()))).is_some()
    }

    /// A table by key.
    pub fn table(&self, k: &TableKey) -> Option<&Table> {
        self.dbs.get(&k.0)?.tables.get(&(k.1.clone(), k.2.clone()))
    }

    /// A table by key, mutable. Mutable access means a write may follow, so it ends the
    /// table's pre-encoded throughput mode ([`Table::synthetic`]).
    pub fn table_mut(&mut self, k: &TableKey) -> Option<&mut Table> {
        let t = self.dbs.get_mut(&k.0)?.tables.get_mut(&(k.1.clone(), k.2.clone()))?;
        t.synthetic = None;
        t.key_order = KeyOrder::default();
        Some(t)
    }
}

/// A table filled by `TestServer::fill_synthetic`: `n` rows, row `i` (0-based) is template
/// `i % templates.len()` with identity value `i + 1`. The SELECTs [`synthetic_plan`] recognises
/// are answered from ROW tokens encoded once per template row and projection.
#[derive(Debug)]
pub struct Synthetic {
    /// Rows in the table.
    pub n: u64,
    /// Template rows (identity values irrelevant: they are patched per row).
    pub templates: Vec<Row>,
    /// Index of the identity column.
    pub identity: Option<usize>,
    encoded: Mutex<HashMap<Vec<usize>, Arc<Encoded>>>,
}

impl Synthetic {
    /// A synthetic table description.
    pub fn new(n: u64, templates: Vec<Row>, identity: Option<usize>) -> Synthetic {
        Synthetic { n, templates, identity, encoded: Mutex::new(HashMap::new()) }
    }

    /// The template rows encoded for the projection `proj` (table column indices); `None` if a
    /// value does not encode (the normal path then reports the error).
    fn encoded(&self, proj: &[usize], cols: &[Column]) -> Option<Arc<Encoded>> {
        let mut cache = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = cache.get(proj) {
            return Some(e.clone());
        }
        let id_width = self.identity.map(|i| crate::wire::int_width(&cols[i].ty) as usize).unwrap_or(0);
        let mut rows = Vec::with_capacity(self.templates.len());
        let mut id_at = Vec::with_capacity(self.templates.len());
        for t in &self.templates {
            let vals: Vec<Value> = proj.iter().map(|&i| if Some(i) == self.identity { Some(Value::Int(0)) } else { t.get(i).cloned() }).collect::<Option<_>>()?;
            let mut b = Vec::new();
            let ends = crate::wire::encode_row(&mut b, proj.iter().map(|&i| (&cols[i].ty, cols[i].nullable, cols[i].name.as_str())), &vals).ok()?;
            let at = proj.iter().zip(&ends).filter(|(&i, _)| Some(i) == self.identity).map(|(_, &e)| e - id_width).collect();
            rows.push(b);
            id_at.push(at);
        }
        let e = Arc::new(Encoded { rows, id_at, id_width });
        cache.insert(proj.to_vec(), e.clone());
        Some(e)
    }
}

/// ROW tokens of a synthetic table's template rows for one projection.
#[derive(Debug, PartialEq)]
pub struct Encoded {
    /// One ROW (or NBCROW) token per template row, identity values zero.
    pub rows: Vec<Vec<u8>>,
    /// Per template: offsets of the identity value bytes to patch.
    pub id_at: Vec<Vec<usize>>,
    /// Identity value width in bytes (1, 2, 4 or 8).
    pub id_width: usize,
}

impl Encoded {
    /// Appends the ROW token of synthetic row `i` (0-based; identity value `i + 1`).
    pub fn write_row(&self, buf: &mut Vec<u8>, i: u64) {
        let k = (i % self.rows.len() as u64) as usize;
        let at = buf.len();
        buf.extend_from_slice(&self.rows[k]);
        let id = (i + 1).to_le_bytes();
        for &o in &self.id_at[k] {
            buf[at + o..at + o + self.id_width].copy_from_slice(&id[..self.id_width]);
        }
    }
}

/// Who holds an application lock.
#[derive(Debug, Clone)]
struct AppLock {
    session: u64,
    count: u32,
    tx_owned: bool,
}

/// Server-wide application locks (sp_getapplock), scoped per database.
#[derive(Debug, Default)]
pub struct AppLocks {
    held: Mutex<HashMap<(String, String), AppLock>>,
    notify: tokio::sync::Notify,
}

impl AppLocks {
    fn held(&self) -> MutexGuard<'_, HashMap<(String, String), AppLock>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_take(&self, key: &(String, String), session: u64, tx_owned: bool) -> bool {
        let mut h = self.held();
        match h.get_mut(key) {
            Some(l) if l.session == session => {
                l.count += 1;
                true
            }
            Some(_) => false,
            None => {
                h.insert(key.clone(), AppLock { session, count: 1, tx_owned });
                true
            }
        }
    }

    /// Releases every lock of a session (disconnect) or only its transaction-owned ones.
    pub fn release_session(&self, session: u64, only_tx: bool) {
        self.held().retain(|_, l| !(l.session == session && (!only_tx || l.tx_owned)));
        self.notify.notify_waiters();
    }
}

/// State shared by all connections and the host-side API.
#[derive(Debug, Default)]
pub struct Shared {
    /// Tables.
    pub catalog: Mutex<Catalog>,
    /// Application locks.
    pub applocks: AppLocks,
}

impl Shared {
    /// Locks the catalog (a poisoned lock is still usable: the data are plain values).
    pub fn cat(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An open transaction of a session.
#[derive(Debug, Default)]
pub struct Tx {
    /// TDS transaction descriptor.
    pub descriptor: u64,
    /// @@TRANCOUNT.
    pub depth: u32,
    /// Rows inserted by this transaction, not yet visible to others.
    pub pending: HashMap<TableKey, Vec<Row>>,
    /// Committed rows as they were before this transaction's first UPDATE/DELETE of a table.
    pub undo: HashMap<TableKey, Vec<Row>>,
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// Session id (SPID).
    pub id: u64,
    /// Current database.
    pub db: String,
    /// Open transaction.
    pub tx: Option<Tx>,
    /// SET NOCOUNT.
    pub nocount: bool,
    /// SET FMTONLY ON: SELECTs describe their result without rows.
    pub fmtonly: bool,
    /// Target of the last INSERT BULK, waiting for its BulkLoad message.
    pub bulk_target: Option<TableKey>,
    /// What that INSERT BULK declared: per listed column, its table column index and type.
    pub bulk_declared: Vec<(usize, SqlType)>,
    tx_counter: u64,
    last_identity: Option<i64>,
}

/// One response event, turned into tokens by the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// COLMETADATA.
    Meta(Arc<Vec<OutCol>>),
    /// ORDER: the 1-based result columns the rows are sorted by (right after COLMETADATA).
    Order(Vec<u16>),
    /// ROW.
    Row(Row),
    /// End of a statement (DONE in a batch, DONEINPROC in an RPC).
    Done {
        /// Status bits other than MORE.
        status: u16,
        /// Row count (sets DONE_COUNT).
        count: Option<u64>,
        /// CurCmd ([`crate::wire::cur_cmd`]); 0 until the statement's exec labels it.
        cmd: u16,
    },
    /// End of an EXEC inside a batch.
    DoneProc,
    /// ERROR.
    Error(SqlError),
    /// INFO (PRINT output, informational messages such as 5701).
    Info(SqlError),
    /// ENVCHANGE with B_VARCHAR values (type 1: database).
    EnvStr(u8, String, String),
    /// ENVCHANGE with byte values (transactions).
    EnvBytes(u8, Vec<u8>, Vec<u8>),
    /// RETURNSTATUS.
    ReturnStatus(i32),
    /// `count` pre-encoded rows of a synthetic table, starting at 0-based row `first`.
    Synthetic {
        /// The encoded template rows.
        rows: Arc<Encoded>,
        /// First row (0-based; identity `first + 1`).
        first: u64,
        /// Rows to send.
        count: u64,
    },
}

/// A value bound to a name (parameter or DECLAREd variable).
#[derive(Debug, Clone)]
pub struct Var {
    /// Declared or wire type (None when unknown, e.g. NULL typed parameter).
    pub ty: Option<SqlType>,
    /// Value.
    pub value: Value,
}

/// Variables of one batch: lowercase name with `@` -> value.
pub type Vars = HashMap<String, Var>;

fn invalid_object(o: &ObjName) -> SqlError {
    SqlError::new(208, format!("Invalid object name '{o}'."))
}

fn invalid_column(c: &str) -> SqlError {
    SqlError::new(207, format!("Invalid column name '{c}'."))
}

/// Read-only context for evaluating expressions.
struct Ctx<'a> {
    cat: &'a Catalog,
    session: &'a Session,
    vars: &'a Vars,
}

impl Session {
    /// A new session in `db`.
    pub fn new(id: u64, db: String) -> Self {
        Session { id, db, tx: None, nocount: false, fmtonly: false, bulk_target: None, bulk_declared: Vec::new(), tx_counter: 0, last_identity: None }
    }

    /// Resolves a name to a table key (database defaults to the current one, schema to dbo).
    pub fn key(&self, o: &ObjName) -> TableKey {
        let db = o.db.as_deref().unwrap_or(&self.db).to_lowercase();
        let schema = o.schema.as_deref().unwrap_or("dbo").to_lowercase();
        (db, schema, o.name.to_lowercase())
    }

    /// Own uncommitted rows of a table.
    pub fn pending(&self, k: &TableKey) -> &[Row] {
        self.tx.as_ref().and_then(|t| t.pending.get(k)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True inside BEGIN TRAN.
    pub fn in_tx(&self) -> bool {
        self.tx.is_some()
    }

    /// BEGIN TRAN; returns the ENVCHANGE event for the outermost begin.
    pub fn begin(&mut self) -> Option<Out> {
        if let Some(tx) = &mut self.tx {
            tx.depth += 1;
            return None;
        }
        self.tx_counter += 1;
        let descriptor = (self.id << 32) | self.tx_counter;
        self.tx = Some(Tx { descriptor, depth: 1, ..Default::default() });
        Some(Out::EnvBytes(8, descriptor.to_le_bytes().to_vec(), Vec::new()))
    }

    /// COMMIT: applies pending rows when the outermost level commits.
    pub fn commit(&mut self, shared: &Shared) -> Result<Option<Out>, SqlError> {
        let Some(tx) = &mut self.tx else {
            return Err(SqlError::new(3902, "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION."));
        };
        if tx.depth > 1 {
            tx.depth -= 1;
            return Ok(None);
        }
        let tx = self.tx.take().unwrap_or_default();
        let mut cat = shared.cat();
        for (k, rows) in tx.pending {
            if let Some(t) = cat.table_mut(&k) {
                t.rows.extend(rows);
            }
        }
        drop(cat);
        shared.applocks.release_session(self.id, true);
        Ok(Some(Out::EnvBytes(9, Vec::new(), tx.descriptor.to_le_bytes().to_vec())))
    }

    /// ROLLBACK (also on disconnect and deadlock): discards pending rows, restores UPDATE/DELETE undo images.
    pub fn rollback(&mut self, shared: &Shared) -> Option<Out> {
        let tx = self.tx.take()?;
        let mut cat = shared.cat();
        for (k, rows) in tx.undo {
            if let Some(t) = cat.table_mut(&k) {
                t.rows = rows;
            }
        }
        drop(cat);
        shared.applocks.release_session(self.id, true);
        Some(Out::EnvBytes(10, Vec::new(), tx.descriptor.to_le_bytes().to_vec()))
    }

    fn done(&self, count: u64) -> Out {
        Out::Done { status: 0, count: if self.nocount { None } else { Some(count) }, cmd: 0 }
    }

    /// Runs parsed statements; stops at the first error (which is reported as ERROR + DONE).
    pub async fn run(&mut self, shared: &Shared, stmts: &[Parsed], vars: &mut Vars, hook: &(dyn Fn(&str) -> Option<SqlError> + Sync)) -> Vec<Out> {
        let mut out = Vec::new();
        for p in stmts {
            let r = match hook(&p.text) {
                Some(e) => {
                    if e.number == 1205 {
                        if let Some(ev) = self.rollback(shared) {
                            out.push(ev);
                        }
                    }
                    Err(e)
                }
                None if self.fmtonly && matches!(p.stmt, Stmt::Insert { .. } | Stmt::Update { .. } | Stmt::Delete { .. }) => Ok(()),
                None => {
                    let start = out.len();
                    let r = self.exec(shared, &p.stmt, &p.text, vars, &mut out).await;
                    if self.fmtonly && matches!(p.stmt, Stmt::Select(_)) {
                        fmtonly_result(&mut out, start);
                    }
                    r
                }
            };
            if let Err(e) = r {
                out.push(Out::Error(e));
                out.push(Out::Done { status: crate::wire::done::ERROR, count: None, cmd: cur_cmd_of(&p.stmt) });
                break;
            }
        }
        out
    }

    /// `SELECT @v = expr, ... [FROM t ...]`: each assignment evaluated per row, in order (so
    /// `@v = COALESCE(@v + ', ', '') + name` concatenates); returns the rows visited.
    fn select_assign(&self, shared: &Shared, s: &Select, vars: &mut Vars) -> Result<u64, SqlError> {
        let mixed = || SqlError::new(141, "A SELECT statement that assigns a value to a variable must not be combined with data-retrieval operations.");
        let assigns: Vec<(String, Expr)> = s.items.iter().map(|i| if let SelItem::Assign(v, e) = i { Ok((v.clone(), e.clone())) } else { Err(mixed()) }).collect::<Result<_, _>>()?;
        let (cols, rows): (Vec<Column>, Vec<Row>) = match s.from {
            Some(_) => {
                let star = Select { items: vec![SelItem::Star], ..s.clone() };
                let cat = shared.cat();
                let (meta, rows) = run_select(&Ctx { cat: &cat, session: self, vars }, &star)?;
                (meta.iter().map(|m| Column::new(&m.name, m.ty, m.nullable)).collect(), rows)
            }
            None => (Vec::new(), vec![Vec::new()]),
        };
        for row in &rows {
            for (v, e) in &assigns {
                let val = {
                    let cat = shared.cat();
                    eval(&Ctx { cat: &cat, session: self, vars }, e, if s.from.is_some() { Some(row) } else { None }, &cols)?
                };
                let ty = vars.get(v).ok_or_else(|| SqlError::new(137, format!("Must declare the scalar variable \"{v}\".")))?.ty;
                let value = match ty {
                    Some(t) => val.coerce(&t, v)?,
                    None => val,
                };
                vars.insert(v.clone(), Var { ty, value });
            }
        }
        Ok(rows.len() as u64)
    }

    /// `EXEC sp_executesql @stmt, N'@a type [OUTPUT], ...', @a = expr [OUTPUT], ...` inside a
    /// batch: the statement runs with only its declared parameters; OUTPUT parameters bound to a
    /// variable copy their final value back to it.
    fn executesql_in_batch<'a>(&'a mut self, shared: &'a Shared, args: &'a [(Option<String>, Expr)], vars: &'a mut Vars, out: &'a mut Vec<Out>) -> Pin<Box<dyn Future<Output = Result<(), SqlError>> + Send + 'a>> {
        Box::pin(async move {
            let vals: Vec<Value> = {
                let cat = shared.cat();
                let ctx = Ctx { cat: &cat, session: self, vars };
                args.iter().map(|(_, e)| eval(&ctx, e, None, &[])).collect::<Result<_, _>>()?
            };
            let Some(Value::Str(stmt)) = vals.first() else {
                return Err(SqlError::new(214, "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'."));
            };
            let decl = match vals.get(1) {
                Some(Value::Str(d)) => crate::prepared::declared_params(d),
                _ => Vec::new(),
            };
            let mut inner = Vars::new();
            for (i, (name, _)) in decl.iter().enumerate() {
                let at = args.iter().skip(2).position(|(n, _)| n.as_deref() == Some(name.as_str())).or_else(|| args.get(2 + i).filter(|(n, _)| n.is_none()).map(|_| i));
                let value = at.and_then(|k| vals.get(2 + k).cloned()).unwrap_or(Value::Null);
                inner.insert(name.clone(), Var { ty: None, value });
            }
            let stmts = crate::sql::parse_batch(stmt)?;
            for p in &stmts {
                self.exec(shared, &p.stmt, &p.text, &mut inner, out).await?;
            }
            for (name, output) in &decl {
                let target = args.iter().skip(2).find(|(n, _)| n.as_deref() == Some(name.as_str())).map(|(_, e)| e);
                if let (true, Some(Expr::Var(outer))) = (*output, target) {
                    let value = inner.get(name).map(|v| v.value.clone()).unwrap_or(Value::Null);
                    let ty = vars.get(outer).ok_or_else(|| SqlError::new(137, format!("Must declare the scalar variable \"{outer}\".")))?.ty;
                    let value = match ty {
                        Some(t) => value.coerce(&t, outer)?,
                        None => value,
                    };
                    vars.insert(outer.clone(), Var { ty, value });
                }
            }
            out.push(Out::ReturnStatus(0));
            out.push(Out::DoneProc);
            Ok(())
        })
    }

    fn exec<'a>(&'a mut self, shared: &'a Shared, stmt: &'a Stmt, text: &'a str, vars: &'a mut Vars, out: &'a mut Vec<Out>) -> Pin<Box<dyn Future<Output = Result<(), SqlError>> + Send + 'a>> {
        Box::pin(async move {
            let start = out.len();
            let r = self.exec_inner(shared, stmt, text, vars, out).await;
            // The DONEs this statement sent carry its CurCmd; those of statements nested in an
            // IF or a block were labelled by their own exec.
            for o in &mut out[start..] {
                if let Out::Done { cmd: c @ 0, .. } = o {
                    *c = cur_cmd_of(stmt);
                }
            }
            r
        })
    }

    fn exec_inner<'a>(&'a mut self, shared: &'a Shared, stmt: &'a Stmt, text: &'a str, vars: &'a mut Vars, out: &'a mut Vec<Out>) -> Pin<Box<dyn Future<Output = Result<(), SqlError>> + Send + 'a>> {
        Box::pin(async move {
            match stmt {
                Stmt::Select(s) if s.items.iter().any(|i| matches!(i, SelItem::Assign(..))) => {
                    let n = self.select_assign(shared, s, vars)?;
                    out.push(self.done(n));
                }
                Stmt::ExecDynamic(e) => {
                    let sql = {
                        let cat = shared.cat();
                        eval(&Ctx { cat: &cat, session: self, vars }, e, None, &[])?
                    };
                    let Value::Str(sql) = sql else { return Err(SqlError::new(102, "EXEC (...) needs a character string.")) };
                    let stmts = crate::sql::parse_batch(&sql)?;
                    let mut inner = Vars::new();
                    for p in &stmts {
                        self.exec(shared, &p.stmt, &p.text, &mut inner, out).await?;
                    }
                }
                Stmt::Exec { ret: None, proc, args } if proc == "sp_executesql" => self.executesql_in_batch(shared, args, vars, out).await?,
                Stmt::Exec { ret: None, proc, args } if proc == "sp_tablecollations_100" => {
                    let name = {
                        let cat = shared.cat();
                        let ctx = Ctx { cat: &cat, session: self, vars };
                        match args.first() {
                            Some((_, e)) => eval(&ctx, e, None, &[])?,
                            None => Value::Null,
                        }
                    };
                    let (cols, rows) = {
                        let cat = shared.cat();
                        let ctx = Ctx { cat: &cat, session: self, vars };
                        let id = apply_func(&ctx, "OBJECT_ID", vec![name])?;
                        let table = cat.dbs.get(&self.db.to_lowercase()).and_then(|d| d.tables.values().find(|t| Value::Int(t.object_id as i64) == id));
                        crate::syscolumns::table_collations(table.map(|t| t.columns.as_slice()).unwrap_or(&[]))
                    };
                    let n = rows.len() as u64;
                    out.push(Out::Meta(Arc::new(cols)));
                    out.extend(rows.into_iter().map(Out::Row));
                    out.push(self.done(n));
                    out.push(Out::ReturnStatus(0));
                    out.push(Out::DoneProc);
                }
                Stmt::Select(s) => {
                    let fast = {
                        let cat = shared.cat();
                        synthetic_plan(&Ctx { cat: &cat, session: self, vars }, s)
                    };
                    if let Some((cols, rows, first, count)) = fast {
                        let order = order_columns(s, &cols);
                        out.push(Out::Meta(Arc::new(cols)));
                        out.extend(order);
                        if count > 0 {
                            out.push(Out::Synthetic { rows, first, count });
                        }
                        out.push(self.done(count));
                        return Ok(());
                    }
                    let (cols, rows) = {
                        let cat = shared.cat();
                        run_select(&Ctx { cat: &cat, session: self, vars }, s)?
                    };
                    let n = rows.len() as u64;
                    let order = order_columns(s, &cols);
                    out.push(Out::Meta(Arc::new(cols)));
                    out.extend(order);
                    out.extend(rows.into_iter().map(Out::Row));
                    out.push(self.done(n));
                }
                Stmt::Insert { table, cols, output, rows } => self.insert(shared, table, cols, output, rows, vars, out)?,
                Stmt::Update { table, sets, filter } => {
                    let n = self.update_or_delete(shared, table, Some(sets), filter.as_ref(), vars)?;
                    out.push(self.done(n));
                }
                Stmt::Delete { table, filter } => {
                    let n = self.update_or_delete(shared, table, None, filter.as_ref(), vars)?;
                    out.push(self.done(n));
                }
                Stmt::Begin => {
                    out.extend(self.begin());
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::Commit => {
                    out.extend(self.commit(shared)?);
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::Rollback => {
                    match self.rollback(shared) {
                        Some(ev) => out.push(ev),
                        None => return Err(SqlError::new(3903, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.")),
                    }
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::If(c, then, els) => {
                    let yes = {
                        let cat = shared.cat();
                        eval_cond(&Ctx { cat: &cat, session: self, vars }, c, None, &[])? == Some(true)
                    };
                    for s in if yes { then } else { els } {
                        self.exec(shared, s, text, vars, out).await?;
                    }
                }
                Stmt::Block(body) => {
                    for s in body {
                        self.exec(shared, s, text, vars, out).await?;
                    }
                }
                Stmt::CreateTable { table, cols, uniques } => {
                    let k = self.key(table);
                    let mut cat = shared.cat();
                    if cat.table(&k).is_some() {
                        return Err(SqlError::new(2714, format!("There is already an object named '{}' in the database.", table.name)));
                    }
                    let mut columns = Vec::new();
                    let mut uq = Vec::new();
                    for (i, c) in cols.iter().enumerate() {
                        let default = match &c.default {
                            None => None,
                            Some(Expr::Func(f, _)) if matches!(f.as_str(), "GETUTCDATE" | "GETDATE" | "SYSUTCDATETIME" | "SYSDATETIME") => Some(ColumnDefault::Now),
                            Some(e) => Some(ColumnDefault::Value(eval(&Ctx { cat: &cat, session: self, vars }, e, None, &[])?.coerce(&c.ty, &c.name)?)),
                        };
                        columns.push(Column { name: c.name.clone(), ty: c.ty, nullable: c.nullable, identity: c.identity, default });
                        if c.unique {
                            uq.push(vec![i]);
                        }
                    }
                    for u in uniques {
                        let idx: Result<Vec<usize>, SqlError> = u.iter().map(|n| columns.iter().position(|c| c.name.eq_ignore_ascii_case(n)).ok_or_else(|| invalid_column(n))).collect();
                        uq.push(idx?);
                    }
                    if !cat.dbs.contains_key(&k.0) {
                        return Err(SqlError::new(911, format!("Database '{}' does not exist.", k.0)));
                    }
                    let (db, schema) = (table.db.clone().unwrap_or_else(|| self.db.clone()), table.schema.clone().unwrap_or_else(|| "dbo".into()));
                    cat.create_table(&db, &schema, &table.name, columns, uq);
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::Truncate { table } => {
                    let k = self.key(table);
                    let mut cat = shared.cat();
                    let t = cat.table_mut(&k).ok_or_else(|| invalid_object(table))?;
                    t.rows.clear();
                    t.next_identity = 1;
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::DropTable { table, if_exists } => {
                    let k = self.key(table);
                    if !shared.cat().drop_table(&k) && !if_exists {
                        return Err(SqlError::new(3701, format!("Cannot drop the table '{}', because it does not exist or you do not have permission.", table.name)));
                    }
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::CreateIndex { unique, table, cols } => {
                    let k = self.key(table);
                    let mut cat = shared.cat();
                    let t = cat.table_mut(&k).ok_or_else(|| invalid_object(table))?;
                    let idx: Result<Vec<usize>, SqlError> = cols.iter().map(|n| t.col_index(n).ok_or_else(|| invalid_column(n))).collect();
                    let idx = idx?;
                    if *unique {
                        t.uniques.push(idx);
                    }
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::Declare(list) => {
                    for (name, ty, init) in list {
                        let value = match init {
                            Some(e) => {
                                let cat = shared.cat();
                                eval(&Ctx { cat: &cat, session: self, vars }, e, None, &[])?.coerce(ty, name)?
                            }
                            None => Value::Null,
                        };
                        vars.insert(name.clone(), Var { ty: Some(*ty), value });
                    }
                }
                Stmt::SetVar(name, e) => {
                    let ty = vars.get(name).ok_or_else(|| SqlError::new(137, format!("Must declare the scalar variable \"{name}\".")))?.ty;
                    let v = {
                        let cat = shared.cat();
                        eval(&Ctx { cat: &cat, session: self, vars }, e, None, &[])?
                    };
                    let v = match ty {
                        Some(t) => v.coerce(&t, name)?,
                        None => v,
                    };
                    vars.insert(name.clone(), Var { ty, value: v });
                }
                Stmt::SetNoCount(on) => self.nocount = *on,
                Stmt::Print(e) => {
                    let v = {
                        let cat = shared.cat();
                        eval(&Ctx { cat: &cat, session: self, vars }, e, None, &[])?
                    };
                    // PRINT NULL prints an empty line, as SQL Server does.
                    let text = if v.is_null() { String::new() } else { v.to_string() };
                    out.push(Out::Info(SqlError { number: 0, class: 0, state: 1, message: text }));
                }
                Stmt::Use(db) => {
                    let name = shared.cat().dbs.get(&db.to_lowercase()).map(|d| d.name.clone());
                    let name = name.ok_or_else(|| SqlError::new(911, format!("Database '{db}' does not exist. Make sure that the name is entered correctly.")))?;
                    let old = std::mem::replace(&mut self.db, name.clone());
                    out.push(Out::EnvStr(1, name.clone(), old));
                    out.push(Out::Info(SqlError { number: 5701, class: 0, state: 1, message: format!("Changed database context to '{name}'.") }));
                    out.push(Out::Done { status: 0, count: None, cmd: 0 });
                }
                Stmt::SetFmtOnly(on) => self.fmtonly = *on,
                Stmt::Noop => {}
                Stmt::Exec { ret, proc, args } => {
                    let vals: Result<Vec<(Option<String>, Value)>, SqlError> = {
                        let cat = shared.cat();
                        let ctx = Ctx { cat: &cat, session: self, vars };
                        args.iter().map(|(n, e)| Ok((n.clone(), eval(&ctx, e, None, &[])?))).collect()
                    };
                    let status = self.call_proc(shared, proc, &vals?, text).await?;
                    if let Some(r) = ret {
                        let ty = vars.get(r).ok_or_else(|| SqlError::new(137, format!("Must declare the scalar variable \"{r}\".")))?.ty;
                        vars.insert(r.clone(), Var { ty, value: Value::Int(status as i64) });
                    }
                    out.push(Out::ReturnStatus(status));
                    out.push(Out::DoneProc);
                }
                Stmt::InsertBulk { table, cols, types } => {
                    let k = self.key(table);
                    let declared = {
                        let cat = shared.cat();
                        let t = cat.table(&k).ok_or_else(|| invalid_object(table))?;
                        bulk_declaration(t, cols, types)?
                    };
                    let Some(declared) = declared else {
                        // SQL Server answers a column the table lacks with a failed DONE and no
                        // diagnostic.
                        out.push(Out::Done { status: crate::wire::done::ERROR, count: None, cmd: crate::wire::cur_cmd::STATEMENT });
                        return Ok(());
                    };
                    self.bulk_target = Some(k);
                    self.bulk_declared = declared;
                    out.push(Out::Done { status: 0, count: None, cmd: crate::wire::cur_cmd::STATEMENT });
                }
            }
            Ok(())
        })
    }

    /// Runs a stored procedure of the subset; returns its return status.
    pub async fn call_proc(&mut self, shared: &Shared, proc: &str, args: &[(Option<String>, Value)], text: &str) -> Result<i32, SqlError> {
        let arg = |name: &str, pos: usize| -> Value {
            args.iter().find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name))).or_else(|| args.get(pos).filter(|(n, _)| n.is_none())).map(|(_, v)| v.clone()).unwrap_or(Value::Null)
        };
        match proc {
            "sp_getapplock" => {
                let Value::Str(resource) = arg("@resource", 0) else {
                    return Err(SqlError::new(201, "Procedure or function 'sp_getapplock' expects parameter '@Resource', which was not supplied."));
                };
                let owner = match arg("@lockowner", 2) {
                    Value::Str(s) => s,
                    _ => "Transaction".into(),
                };
                let tx_owned = !owner.eq_ignore_ascii_case("session");
                if tx_owned && !self.in_tx() {
                    return Err(SqlError::new(1223, format!("Cannot acquire the application lock on resource '{resource}': @LockOwner = 'Transaction' needs an open transaction.")));
                }
                let timeout_ms = match arg("@locktimeout", 3) {
                    Value::Int(i) => i,
                    _ => -1,
                };
                let key = (self.db.to_lowercase(), resource);
                let deadline = if timeout_ms < 0 { None } else { Some(tokio::time::Instant::now() + Duration::from_millis(timeout_ms as u64)) };
                let mut waited = false;
                loop {
                    let notified = shared.applocks.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if shared.applocks.try_take(&key, self.id, tx_owned) {
                        return Ok(if waited { 1 } else { 0 });
                    }
                    waited = true;
                    match deadline {
                        Some(d) => {
                            if tokio::time::timeout_at(d, notified).await.is_err() {
                                return Ok(-1);
                            }
                        }
                        None => notified.await,
                    }
                }
            }
            "sp_releaseapplock" => {
                let Value::Str(resource) = arg("@resource", 0) else {
                    return Err(SqlError::new(201, "Procedure or function 'sp_releaseapplock' expects parameter '@Resource', which was not supplied."));
                };
                let key = (self.db.to_lowercase(), resource.clone());
                let mut held = shared.applocks.held();
                match held.get_mut(&key) {
                    Some(l) if l.session == self.id => {
                        l.count -= 1;
                        if l.count == 0 {
                            held.remove(&key);
                        }
                        drop(held);
                        shared.applocks.notify.notify_waiters();
                        Ok(0)
                    }
                    _ => Err(SqlError::new(1223, format!("Cannot release the application lock (Database Principal: 'public', Resource: '{resource}') because it is not currently held."))),
                }
            }
            _ => Err(SqlError::unsupported(text, &format!("unknown procedure {proc}"))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(&mut self, shared: &Shared, table: &ObjName, cols: &[String], output: &[(Option<String>, Option<String>)], rows: &[Vec<Expr>], vars: &Vars, out: &mut Vec<Out>) -> Result<(), SqlError> {
        let k = self.key(table);
        let mut cat = shared.cat();
        let t = cat.table(&k).ok_or_else(|| invalid_object(table))?;
        let names: Vec<String> = if cols.is_empty() { t.columns.iter().filter(|c| !c.identity).map(|c| c.name.clone()).collect() } else { cols.to_vec() };
        let mut idx = Vec::new();
        for n in &names {
            let i = t.col_index(n).ok_or_else(|| invalid_column(n))?;
            if t.columns[i].identity {
                return Err(SqlError::new(544, format!("Cannot insert explicit value for identity column in table '{}' when IDENTITY_INSERT is set to OFF.", t.name)));
            }
            idx.push(i);
        }
        let mut partial = Vec::new();
        {
            let ctx = Ctx { cat: &cat, session: self, vars };
            for r in rows {
                if r.len() != idx.len() {
                    return Err(SqlError::new(110, "There are fewer columns in the INSERT statement than values specified in the VALUES clause."));
                }
                let mut vals = vec![None; t.columns.len()];
                for (e, &i) in r.iter().zip(&idx) {
                    vals[i] = Some(eval(&ctx, e, None, &[])?);
                }
                partial.push(vals);
            }
        }
        let out_idx: Vec<(usize, String)> = output
            .iter()
            .flat_map(|(n, alias)| match n {
                None => t.columns.iter().enumerate().map(|(i, c)| Ok((i, c.name.clone()))).collect::<Vec<_>>(),
                Some(n) => vec![t.col_index(n).map(|i| (i, alias.clone().unwrap_or_else(|| t.columns[i].name.clone()))).ok_or_else(|| invalid_column(n))],
            })
            .collect::<Result<_, _>>()?;
        let pending = self.pending(&k).to_vec();
        let t = cat.table_mut(&k).ok_or_else(|| invalid_object(table))?;
        let new_rows = build_rows(t, partial, &pending)?;
        self.last_identity = t.columns.iter().position(|c| c.identity).and_then(|i| new_rows.last().map(|r| &r[i])).and_then(|v| if let Value::Int(i) = v { Some(*i) } else { None }).or(self.last_identity);
        if !output.is_empty() {
            let meta: Vec<OutCol> = out_idx.iter().map(|(i, name)| OutCol { name: name.clone(), ty: t.columns[*i].ty, nullable: t.columns[*i].nullable, identity: false }).collect();
            out.push(Out::Meta(Arc::new(meta)));
            for r in &new_rows {
                out.push(Out::Row(out_idx.iter().map(|(i, _)| r[*i].clone()).collect()));
            }
        }
        let n = new_rows.len() as u64;
        match &mut self.tx {
            Some(tx) => tx.pending.entry(k).or_default().extend(new_rows),
            None => t.rows.extend(new_rows),
        }
        out.push(self.done(n));
        Ok(())
    }

    fn update_or_delete(&mut self, shared: &Shared, table: &ObjName, sets: Option<&Vec<(String, Expr)>>, filter: Option<&Cond>, vars: &Vars) -> Result<u64, SqlError> {
        let k = self.key(table);
        let mut cat = shared.cat();
        let t = cat.table(&k).ok_or_else(|| invalid_object(table))?;
        let cols = t.columns.clone();
        let set_idx: Vec<(usize, &Expr)> = match sets {
            None => Vec::new(),
            Some(s) => s
                .iter()
                .map(|(n, e)| {
                    let i = t.col_index(n).ok_or_else(|| invalid_column(n))?;
                    if cols[i].identity {
                        return Err(SqlError::new(8102, format!("Cannot update identity column '{}'.", cols[i].name)));
                    }
                    Ok((i, e))
                })
                .collect::<Result<_, _>>()?,
        };
        // Compute the change against committed rows and own pending rows, then apply.
        let apply = |rows: &[Row], ctx: &Ctx| -> Result<(Vec<Row>, u64), SqlError> {
            let mut kept = Vec::with_capacity(rows.len());
            let mut n = 0;
            for r in rows {
                let hit = match filter {
                    None => true,
                    Some(c) => eval_cond(ctx, c, Some(r), &cols)? == Some(true),
                };
                if !hit {
                    kept.push(r.clone());
                    continue;
                }
                n += 1;
                if sets.is_some() {
                    let mut nr = r.clone();
                    for (i, e) in &set_idx {
                        let v = eval(ctx, e, Some(r), &cols)?.coerce(&cols[*i].ty, &cols[*i].name)?;
                        if v.is_null() && !cols[*i].nullable {
                            return Err(null_error(&cols[*i].name, &k, "UPDATE"));
                        }
                        nr[*i] = v;
                    }
                    kept.push(nr);
                }
            }
            Ok((kept, n))
        };
        let (committed, n1, pending, n2) = {
            let ctx = Ctx { cat: &cat, session: self, vars };
            let (c, n1) = apply(&t.rows, &ctx)?;
            let (p, n2) = apply(self.pending(&k), &ctx)?;
            (c, n1, p, n2)
        };
        if sets.is_some() && n1 + n2 > 0 {
            let all: Vec<&Row> = committed.iter().chain(pending.iter()).collect();
            // Only a constraint on a column the SET changes can break (the others held before);
            // the pairwise check is quadratic, so a table with a primary key is not re-checked
            // whole on every UPDATE of another column.
            for u in t.uniques.iter().filter(|u| u.iter().any(|c| set_idx.iter().any(|(i, _)| i == c))) {
                for (a, ra) in all.iter().enumerate() {
                    if all[a + 1..].iter().any(|rb| same_key(ra, rb, u)) {
                        return Err(unique_error(t, u, ra));
                    }
                }
            }
        }
        let t = cat.table_mut(&k).ok_or_else(|| invalid_object(table))?;
        if let Some(tx) = &mut self.tx {
            if n1 > 0 {
                tx.undo.entry(k.clone()).or_insert_with(|| t.rows.clone());
            }
            tx.pending.insert(k, pending);
        }
        if n1 > 0 {
            t.rows = committed;
        }
        Ok(n1 + n2)
    }
}

fn null_error(col: &str, k: &TableKey, what: &str) -> SqlError {
    SqlError::new(515, format!("Cannot insert the value NULL into column '{col}', table '{}.{}.{}'; column does not allow nulls. {what} fails.", k.0, k.1, k.2))
}

fn same_key(a: &Row, b: &Row, cols: &[usize]) -> bool {
    cols.iter().all(|&i| match (a[i].is_null(), b[i].is_null()) {
        (true, true) => true,
        (false, false) => a[i].sql_cmp(&b[i]) == Some(std::cmp::Ordering::Equal),
        _ => false,
    })
}

fn unique_error(t: &Table, u: &[usize], row: &Row) -> SqlError {
    let names: Vec<&str> = u.iter().map(|&i| t.columns[i].name.as_str()).collect();
    let vals: Vec<String> = u.iter().map(|&i| row[i].to_string()).collect();
    SqlError { number: 2627, class: 14, state: 1, message: format!("Violation of UNIQUE KEY constraint 'UQ_{}_{}'. Cannot insert duplicate key in object '{}.{}'. The duplicate key value is ({}).", t.name, names.join("_"), t.schema, t.name, vals.join(", ")) }
}

/// Completes rows for insertion: identity, defaults, coercion, NOT NULL and UNIQUE checks.
/// `partial[i][c]` is `Some(value)` for supplied columns. Consumes identity values.
pub fn build_rows(t: &mut Table, partial: Vec<Vec<Option<Value>>>, pending: &[Row]) -> Result<Vec<Row>, SqlError> {
    let key = ("".to_string(), t.schema.to_lowercase(), t.name.clone());
    let now = Value::now();
    let mut out: Vec<Row> = Vec::with_capacity(partial.len());
    for p in partial {
        let mut row = Vec::with_capacity(t.columns.len());
        for (c, v) in t.columns.iter().zip(p) {
            let v = match v {
                Some(v) if c.identity => {
                    // KEEP_IDENTITY bulk loads supply identity values; keep the seed ahead of them.
                    let v = v.coerce(&c.ty, &c.name)?;
                    if let Value::Int(i) = v {
                        t.next_identity = t.next_identity.max(i + 1);
                    }
                    v
                }
                Some(v) => v.coerce(&c.ty, &c.name)?,
                None if c.identity => {
                    let i = t.next_identity;
                    t.next_identity += 1;
                    Value::Int(i)
                }
                None => match &c.default {
                    Some(ColumnDefault::Now) => now.clone().coerce(&c.ty, &c.name)?,
                    Some(ColumnDefault::Value(v)) => v.clone(),
                    None => Value::Null,
                },
            };
            if v.is_null() && !c.nullable {
                return Err(null_error(&c.name, &key, "INSERT"));
            }
            row.push(v);
        }
        out.push(row);
    }
    for u in &t.uniques {
        // A single integer key (a primary key on an IDENTITY) is checked through a hash set, so
        // loading n rows into a table of m costs n + m, not n * m.
        if let [col] = u[..] {
            let int_key = |r: &Row| match &r[col] {
                Value::Int(v) => Some(Some(*v)),
                Value::Null => Some(None),
                _ => None,
            };
            let existing: Option<Vec<Option<i64>>> = t.rows.iter().chain(pending).map(int_key).collect();
            if let Some(existing) = existing {
                let mut seen = std::collections::HashSet::with_capacity(existing.len() + out.len());
                for k in existing {
                    seen.insert(k);
                }
                let mut fallback = false;
                for r in &out {
                    match int_key(r) {
                        Some(k) if !seen.insert(k) => return Err(unique_error(t, u, r)),
                        Some(_) => {}
                        None => fallback = true,
                    }
                }
                if !fallback {
                    continue;
                }
            }
        }
        for (i, r) in out.iter().enumerate() {
            if t.rows.iter().chain(pending).chain(&out[..i]).any(|o| same_key(o, r, u)) {
                return Err(unique_error(t, u, r));
            }
        }
    }
    Ok(out)
}

fn info_schema_columns(cat: &Catalog, db: &str) -> Table {
    let c = |n: &str, ty: SqlType, nullable: bool| Column::new(n, ty, nullable);
    let columns = vec![
        c("TABLE_CATALOG", SqlType::NVarChar(Some(128)), true),
        c("TABLE_SCHEMA", SqlType::NVarChar(Some(128)), true),
        c("TABLE_NAME", SqlType::NVarChar(Some(128)), false),
        c("COLUMN_NAME", SqlType::NVarChar(Some(128)), true),
        c("ORDINAL_POSITION", SqlType::Int, true),
        c("COLUMN_DEFAULT", SqlType::NVarChar(Some(4000)), true),
        c("IS_NULLABLE", SqlType::varchar(Some(3)), true),
        c("DATA_TYPE", SqlType::NVarChar(Some(128)), true),
        c("CHARACTER_MAXIMUM_LENGTH", SqlType::Int, true),
        c("NUMERIC_PRECISION", SqlType::TinyInt, true),
        c("NUMERIC_SCALE", SqlType::Int, true),
        c("DATETIME_PRECISION", SqlType::SmallInt, true),
        c("COLLATION_NAME", SqlType::NVarChar(Some(128)), true),
    ];
    let mut rows = Vec::new();
    if let Some(d) = cat.dbs.get(&db.to_lowercase()) {
        for t in d.tables.values() {
            for (i, col) in t.columns.iter().enumerate() {
                let (chars, prec, scale, dtp) = match col.ty {
                    // Binary lengths count bytes; XML is a large value type (-1); SQL_VARIANT has no length.
                    SqlType::NVarChar(n) | SqlType::VarChar(n, _) | SqlType::VarBinary(n) => (Value::Int(n.map(|n| n as i64).unwrap_or(-1)), Value::Null, Value::Null, Value::Null),
                    SqlType::Binary(n) => (Value::Int(n as i64), Value::Null, Value::Null, Value::Null),
                    SqlType::Xml => (Value::Int(-1), Value::Null, Value::Null, Value::Null),
                    SqlType::SqlVariant | SqlType::UniqueIdentifier => (Value::Null, Value::Null, Value::Null, Value::Null),
                    SqlType::Float => (Value::Null, Value::Int(53), Value::Null, Value::Null),
                    SqlType::TinyInt => (Value::Null, Value::Int(3), Value::Int(0), Value::Null),
                    SqlType::SmallInt => (Value::Null, Value::Int(5), Value::Int(0), Value::Null),
                    SqlType::Int => (Value::Null, Value::Int(10), Value::Int(0), Value::Null),
                    SqlType::BigInt => (Value::Null, Value::Int(19), Value::Int(0), Value::Null),
                    SqlType::Bit => (Value::Null, Value::Null, Value::Null, Value::Null),
                    SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => (Value::Null, Value::Int(precision as i64), Value::Int(scale as i64), Value::Null),
                    SqlType::DateTime2(s) => (Value::Null, Value::Null, Value::Null, Value::Int(s as i64)),
                    SqlType::DateTime => (Value::Null, Value::Null, Value::Null, Value::Int(3)),
                };
                let default = match &col.default {
                    None => Value::Null,
                    Some(ColumnDefault::Now) => Value::Str("(getutcdate())".into()),
                    Some(ColumnDefault::Value(v)) => Value::Str(format!("(({v}))")),
                };
                rows.push(vec![
                    Value::Str(d.name.clone()),
                    Value::Str(t.schema.clone()),
                    Value::Str(t.name.clone()),
                    Value::Str(col.name.clone()),
                    Value::Int(i as i64 + 1),
                    default,
                    Value::Str(if col.nullable { "YES" } else { "NO" }.into()),
                    Value::Str(col.ty.data_type_name().into()),
                    chars,
                    prec,
                    scale,
                    dtp,
                    crate::syscolumns::collation_of(&col.ty).map_or(Value::Null, |c| Value::Str(c.name())),
                ]);
            }
        }
    }
    view("INFORMATION_SCHEMA", "COLUMNS", columns, rows)
}

fn info_schema_tables(cat: &Catalog, db: &str) -> Table {
    let columns = vec![
        Column::new("TABLE_CATALOG", SqlType::NVarChar(Some(128)), true),
        Column::new("TABLE_SCHEMA", SqlType::NVarChar(Some(128)), true),
        Column::new("TABLE_NAME", SqlType::NVarChar(Some(128)), false),
        Column::new("TABLE_TYPE", SqlType::varchar(Some(10)), true),
    ];
    let rows = cat
        .dbs
        .get(&db.to_lowercase())
        .map(|d| d.tables.values().map(|t| vec![Value::Str(d.name.clone()), Value::Str(t.schema.clone()), Value::Str(t.name.clone()), Value::Str("BASE TABLE".into())]).collect())
        .unwrap_or_default();
    view("INFORMATION_SCHEMA", "TABLES", columns, rows)
}

/// The catalog views this server has: INFORMATION_SCHEMA.COLUMNS/TABLES and the sys views a
/// client reads to tell one database (and table) incarnation from another.
fn catalog_view(cat: &Catalog, db: &str, schema: &str, name: &str) -> Option<Table> {
    match (schema, name) {
        ("information_schema", "columns") => Some(info_schema_columns(cat, db)),
        ("information_schema", "tables") => Some(info_schema_tables(cat, db)),
        ("sys", "databases") => Some(sys_databases(cat)),
        ("sys", "database_recovery_status") => Some(sys_database_recovery_status(cat)),
        ("sys", "objects" | "tables") => Some(sys_objects(cat, db)),
        ("sys", "columns" | "all_columns") => Some(sys_columns(cat, db, name)),
        _ => None,
    }
}

fn view(schema: &str, name: &str, columns: Vec<Column>, rows: Vec<Row>) -> Table {
    Table { schema: schema.into(), name: name.into(), columns, rows, next_identity: 1, uniques: Vec::new(), object_id: 0, created: 0, bulk_count_only: false, synthetic: None, key_order: KeyOrder::default() }
}

/// `sys.databases` (name, database_id, create_date). create_date is DATETIME in SQL Server;
/// here DATETIME2(3), the type this server gives DATETIME columns.
fn sys_databases(cat: &Catalog) -> Table {
    let columns = vec![
        Column::new("name", SqlType::NVarChar(Some(128)), false),
        Column::new("database_id", SqlType::Int, false),
        Column::new("create_date", SqlType::DateTime2(3), false),
    ];
    let rows = cat.dbs.values().map(|d| vec![Value::Str(d.name.clone()), Value::Int(d.id as i64), Value::DateTime2(d.created)]).collect();
    view("sys", "databases", columns, rows)
}

/// `sys.database_recovery_status` (database_id, database_guid, family_guid, recovery_fork_guid).
/// The GUIDs are uniqueidentifier in SQL Server; here NVARCHAR(36) text, which is what
/// `CONVERT(NVARCHAR(36), guid)` gives there.
fn sys_database_recovery_status(cat: &Catalog) -> Table {
    let columns = vec![
        Column::new("database_id", SqlType::Int, false),
        Column::new("database_guid", SqlType::NVarChar(Some(36)), true),
        Column::new("family_guid", SqlType::NVarChar(Some(36)), true),
        Column::new("recovery_fork_guid", SqlType::NVarChar(Some(36)), true),
    ];
    let rows = cat
        .dbs
        .values()
        .map(|d| vec![Value::Int(d.id as i64), Value::Str(d.guid.clone()), Value::Str(d.guid.clone()), Value::Str(d.recovery_fork.clone())])
        .collect();
    view("sys", "database_recovery_status", columns, rows)
}

/// `sys.objects` / `sys.tables` of database `db`: its user tables (object_id, name, type 'U',
/// create_date).
fn sys_objects(cat: &Catalog, db: &str) -> Table {
    let columns = vec![
        Column::new("object_id", SqlType::Int, false),
        Column::new("name", SqlType::NVarChar(Some(128)), false),
        Column::new("type", SqlType::varchar(Some(2)), false),
        Column::new("create_date", SqlType::DateTime2(3), false),
    ];
    let rows = cat
        .dbs
        .get(&db.to_lowercase())
        .map(|d| d.tables.values().map(|t| vec![Value::Int(t.object_id as i64), Value::Str(t.name.clone()), Value::Str("U".into()), Value::DateTime2(t.created)]).collect())
        .unwrap_or_default();
    view("sys", "objects", columns, rows)
}

/// A SELECT's output under SET FMTONLY ON, as SQL Server sends it: its COLMETADATA, no rows,
/// and a DONE without a row count.
fn fmtonly_result(out: &mut Vec<Out>, start: usize) {
    let tail = out.split_off(start);
    out.extend(tail.into_iter().filter(|o| !matches!(o, Out::Row(_) | Out::Synthetic { .. })).map(|o| match o {
        Out::Done { status, cmd, .. } => Out::Done { status, count: None, cmd },
        o => o,
    }));
}

/// `sys.columns` / `sys.all_columns` of database `db`'s user tables (see [`crate::syscolumns`]).
fn sys_columns(cat: &Catalog, db: &str, name: &str) -> Table {
    let rows = cat.dbs.get(&db.to_lowercase()).map(|d| d.tables.values().flat_map(|t| crate::syscolumns::view_rows(t.object_id, &t.columns)).collect()).unwrap_or_default();
    view("sys", name, crate::syscolumns::view_columns(), rows)
}

fn has_agg(e: &Expr) -> bool {
    match e {
        Expr::Agg(..) => true,
        Expr::Func(_, a) => a.iter().any(has_agg),
        Expr::Bin(a, _, b) => has_agg(a) || has_agg(b),
        Expr::Neg(a) | Expr::Cast(a, _) => has_agg(a),
        _ => false,
    }
}

/// Binds `INSERT BULK t (col type, ...)` to the table as SQL Server does: (table column, declared
/// type) per listed column; `Ok(None)` when a column is not in the table (SQL Server then sends
/// only a failed DONE), 264 for a column listed twice, 2715 for an unknown type.
fn bulk_declaration(t: &Table, cols: &[String], types: &[Result<SqlType, String>]) -> Result<Option<Vec<(usize, SqlType)>>, SqlError> {
    let mut out: Vec<(usize, SqlType)> = Vec::with_capacity(cols.len());
    for (n, (c, ty)) in cols.iter().zip(types).enumerate() {
        let ty = match ty {
            Ok(ty) => *ty,
            Err(name) => return Err(SqlError { number: 2715, class: 16, state: 2, message: format!("Column, parameter, or variable #{}: Cannot find data type {name}.", n + 1) }),
        };
        let Some(i) = t.col_index(c) else { return Ok(None) };
        if out.iter().any(|(j, _)| *j == i) {
            return Err(SqlError::new(264, format!("The column name '{c}' is specified more than once in the SET clause or column list of an INSERT. A column cannot be assigned more than one value in the same clause.")));
        }
        out.push((i, ty));
    }
    Ok(Some(out))
}

/// The CurCmd of the DONE ending a statement ([`crate::wire::cur_cmd`]).
fn cur_cmd_of(stmt: &Stmt) -> u16 {
    use crate::wire::cur_cmd;
    match stmt {
        Stmt::Select(_) => cur_cmd::SELECT,
        Stmt::Insert { .. } => cur_cmd::INSERT,
        Stmt::Update { .. } => cur_cmd::UPDATE,
        Stmt::Delete { .. } => cur_cmd::DELETE,
        Stmt::CreateTable { .. } => cur_cmd::TABLE_CREATE,
        Stmt::DropTable { .. } => cur_cmd::TABLE_DESTROY,
        Stmt::CreateIndex { .. } => cur_cmd::INDEX_CREATE,
        Stmt::InsertBulk { .. } => cur_cmd::STATEMENT,
        _ => 0,
    }
}

/// The ORDER token SQL Server sends after COLMETADATA for a SELECT with ORDER BY: the result
/// column numbers (1-based) of the ORDER BY items that are in the select list, by column name,
/// alias or the same expression; `None` without ORDER BY or when no item is selected.
fn order_columns(s: &Select, meta: &[OutCol]) -> Option<Out> {
    if s.order.is_empty() || s.from.is_none() {
        return None;
    }
    // The select-list expression behind each result column (`None`: a `*` column).
    let explicit = s.items.iter().filter(|i| matches!(i, SelItem::Expr(..))).count();
    let star_width = meta.len().saturating_sub(explicit);
    let mut exprs: Vec<Option<&Expr>> = Vec::with_capacity(meta.len());
    for it in &s.items {
        match it {
            SelItem::Star => exprs.extend(std::iter::repeat_n(None, star_width)),
            SelItem::Expr(e, _) => exprs.push(Some(e)),
            // `SELECT @v = ...` sends no result set, so it has no ORDER either.
            SelItem::Assign(..) => return None,
        }
    }
    let mut cols = Vec::new();
    for (e, _) in &s.order {
        let hit = (0..meta.len().min(exprs.len())).find(|&j| match (e, exprs[j]) {
            (Expr::Col(n), None) => meta[j].name.eq_ignore_ascii_case(n),
            (Expr::Col(n), Some(Expr::Col(c))) => c.eq_ignore_ascii_case(n) || meta[j].name.eq_ignore_ascii_case(n),
            (Expr::Col(n), Some(_)) => meta[j].name.eq_ignore_ascii_case(n),
            (e, Some(x)) => e == x,
            _ => false,
        });
        if let Some(j) = hit {
            let j = j as u16 + 1;
            if !cols.contains(&j) {
                cols.push(j);
            }
        }
    }
    (!cols.is_empty()).then_some(Out::Order(cols))
}

/// Runs a SELECT: result columns and rows (already coerced to the column types).
/// The pre-encoded answer to a SELECT of a synthetic table: (columns, encoded rows, first row,
/// row count), when the statement is `SELECT [TOP (n)] {* | col [AS a], ...} FROM t` with an
/// optional WHERE made of `AND`ed comparisons (`= < <= > >=`, BETWEEN) of the identity column
/// with integer constants or variables, and an optional `ORDER BY` the identity column ascending
/// (which is also the stored order). Anything else (or own uncommitted rows in the table) gives
/// `None` and takes the normal path, which returns the same rows.
fn synthetic_plan(ctx: &Ctx, s: &Select) -> Option<(Vec<OutCol>, Arc<Encoded>, u64, u64)> {
    let o = s.from.as_ref()?;
    let k = ctx.session.key(o);
    let t = ctx.cat.table(&k)?;
    let syn = t.synthetic.as_ref()?;
    if !ctx.session.pending(&k).is_empty() || syn.templates.is_empty() {
        return None;
    }
    let cols = &t.columns;
    let mut proj = Vec::new();
    let mut meta = Vec::new();
    for it in &s.items {
        let mut push = |i: usize, alias: Option<&String>| {
            let c = &cols[i];
            proj.push(i);
            meta.push(OutCol { name: alias.cloned().unwrap_or_else(|| c.name.clone()), ty: c.ty, nullable: c.nullable, identity: c.identity });
        };
        match it {
            SelItem::Star => (0..cols.len()).for_each(|i| push(i, None)),
            SelItem::Expr(Expr::Col(n), alias) => push(t.col_index(n)?, alias.as_ref()),
            SelItem::Expr(..) | SelItem::Assign(..) => return None,
        }
    }
    let is_id = |n: &str| syn.identity.is_some_and(|i| cols[i].name.eq_ignore_ascii_case(n));
    match s.order.as_slice() {
        [] => {}
        [(Expr::Col(n), false)] if is_id(n) => {}
        // An alias of the identity column (ORDER BY resolves table columns first).
        [(Expr::Col(n), false)] if t.col_index(n).is_none() && meta.iter().position(|m| m.name.eq_ignore_ascii_case(n)).is_some_and(|j| Some(proj[j]) == syn.identity) => {}
        _ => return None,
    }
    let (mut lo, mut hi) = (1i128, syn.n as i128);
    if let Some(c) = &s.filter {
        id_bounds(ctx, c, &is_id, cols, &mut lo, &mut hi)?;
    }
    let mut count = (hi - lo + 1).max(0);
    if let Some(e) = &s.top {
        match eval(ctx, e, None, cols).ok()? {
            Value::Int(n) if n >= 0 => count = count.min(n as i128),
            _ => return None,
        }
    }
    let rows = syn.encoded(&proj, cols)?;
    Some((meta, rows, (lo.max(1) - 1) as u64, count as u64))
}

/// Narrows [lo, hi] by a condition on the identity column; `None` if the condition is not of
/// the recognised form.
fn id_bounds(ctx: &Ctx, c: &Cond, is_id: &dyn Fn(&str) -> bool, cols: &[Column], lo: &mut i128, hi: &mut i128) -> Option<()> {
    // The integer a side evaluates to; NULL makes the comparison unknown: no row matches.
    let int = |e: &Expr| -> Option<Option<i128>> {
        match eval(ctx, e, None, cols).ok()? {
            Value::Int(v) => Some(Some(v as i128)),
            Value::Null => Some(None),
            _ => None,
        }
    };
    let mut apply = |op: CmpOp, v: Option<i128>| {
        let Some(v) = v else {
            *hi = *lo - 1;
            return Some(());
        };
        match op {
            CmpOp::Eq => {
                *lo = (*lo).max(v);
                *hi = (*hi).min(v);
            }
            CmpOp::Gt => *lo = (*lo).max(v + 1),
            CmpOp::Ge => *lo = (*lo).max(v),
            CmpOp::Lt => *hi = (*hi).min(v - 1),
            CmpOp::Le => *hi = (*hi).min(v),
            CmpOp::Ne => return None,
        }
        Some(())
    };
    match c {
        Cond::And(a, b) => {
            id_bounds(ctx, a, is_id, cols, lo, hi)?;
            id_bounds(ctx, b, is_id, cols, lo, hi)
        }
        Cond::Cmp(Expr::Col(n), op, e) if is_id(n) => apply(*op, int(e)?),
        Cond::Cmp(e, op, Expr::Col(n)) if is_id(n) => {
            let flipped = match op {
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                other => *other,
            };
            apply(flipped, int(e)?)
        }
        Cond::Between(Expr::Col(n), a, b) if is_id(n) => {
            let (a, b) = (int(a)?, int(b)?);
            apply(CmpOp::Ge, a)?;
            apply(CmpOp::Le, b)
        }
        _ => None,
    }
}

/// A keyset page served as SQL Server serves it from a clustered primary key: `SELECT [TOP (n)]
/// ... FROM t [WHERE <bounds on the key>] [ORDER BY key [ASC]]` (bounds as [`id_bounds`] reads
/// them) on a table whose single-column integer primary key the stored rows ascend in, without
/// own uncommitted rows: a binary search to the first key in range, then the next rows in order,
/// instead of filtering and sorting every row. `None`: not such a query (the scan answers it).
fn keyset_seek<'t>(ctx: &Ctx, s: &Select, t: &'t Table, pending: &[Row]) -> Option<Vec<&'t Row>> {
    if ctx.cat.no_index_seek || !pending.is_empty() || s.items.iter().any(|i| matches!(i, SelItem::Expr(e, _) if has_agg(e))) {
        return None;
    }
    let int_col = |c: usize| matches!(t.columns[c].ty, SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt);
    let key = match t.uniques.iter().find(|u| u.len() == 1).map(|u| u[0]).filter(|&k| int_col(k)) {
        Some(k) => k,
        // No integer primary key: a range on an integer column the rows are stored in order of
        // (a child table's PerfSnapshotRunID, filled run by run) is served as a nonclustered
        // index on it would serve it (DBATools has one on every child table's
        // PerfSnapshotRunID).
        None => return ordered_range(ctx, s, t),
    };
    let kc = &t.columns[key];
    let is_key = |n: &str| kc.name.eq_ignore_ascii_case(n);
    match s.order.as_slice() {
        [] => {}
        [(Expr::Col(n), false)] if is_key(n) => {}
        _ => return None,
    }
    let (mut lo, mut hi) = (i64::MIN as i128, i64::MAX as i128);
    if let Some(c) = &s.filter {
        id_bounds(ctx, c, &is_key, &t.columns, &mut lo, &mut hi)?;
    }
    let top = match &s.top {
        None => usize::MAX,
        Some(e) => match eval(ctx, e, None, &t.columns).ok()? {
            Value::Int(n) if n >= 0 => n as usize,
            _ => return None,
        },
    };
    if !t.key_order.sorted(&t.rows, key) {
        return None;
    }
    let k = |r: &Row| match r[key] {
        Value::Int(v) => v as i128,
        _ => i128::MIN,
    };
    ctx.cat.index_seeks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = t.rows.partition_point(|r| k(r) < lo);
    Some(t.rows[start..].iter().take_while(|r| k(r) <= hi).take(top).collect())
}

/// `SELECT ... FROM t WHERE <bounds on column c>` without ORDER BY or TOP, where the stored
/// rows never decrease in integer column `c`: the rows in range by binary search.
fn ordered_range<'t>(ctx: &Ctx, s: &Select, t: &'t Table) -> Option<Vec<&'t Row>> {
    if !s.order.is_empty() || s.top.is_some() {
        return None;
    }
    let filter = s.filter.as_ref()?;
    for (c, col) in t.columns.iter().enumerate() {
        if !matches!(col.ty, SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt) {
            continue;
        }
        let is_col = |n: &str| col.name.eq_ignore_ascii_case(n);
        let (mut lo, mut hi) = (i64::MIN as i128, i64::MAX as i128);
        if id_bounds(ctx, filter, &is_col, &t.columns, &mut lo, &mut hi).is_none() || !t.key_order.ordered(&t.rows, c, false) {
            continue;
        }
        let k = |r: &Row| match r[c] {
            Value::Int(v) => v as i128,
            _ => i128::MIN,
        };
        ctx.cat.index_seeks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = t.rows.partition_point(|r| k(r) < lo);
        return Some(t.rows[start..].iter().take_while(|r| k(r) <= hi).collect());
    }
    None
}

fn run_select(ctx: &Ctx, s: &Select) -> Result<(Vec<OutCol>, Vec<Row>), SqlError> {
    let virt;
    let mut table = None;
    let (cols, committed, pending): (&[Column], &[Row], &[Row]) = match &s.from {
        None => (&[], &[], &[]),
        Some(o) => {
            let k = ctx.session.key(o);
            let db = o.db.as_deref().unwrap_or(&ctx.session.db);
            if let Some(v) = catalog_view(ctx.cat, db, &k.1, &k.2) {
                virt = v;
                (&virt.columns, &virt.rows, &[])
            } else {
                let t = ctx.cat.table(&k).ok_or_else(|| invalid_object(o))?;
                table = Some(t);
                (&t.columns, &t.rows, ctx.session.pending(&k))
            }
        }
    };
    // Output columns.
    let mut items: Vec<(Expr, String)> = Vec::new();
    let mut meta = Vec::new();
    for it in &s.items {
        match it {
            SelItem::Star => {
                if s.from.is_none() {
                    return Err(SqlError::new(263, "Must specify table to select from."));
                }
                for c in cols {
                    items.push((Expr::Col(c.name.clone()), c.name.clone()));
                    meta.push(OutCol { name: c.name.clone(), ty: c.ty, nullable: c.nullable, identity: c.identity });
                }
            }
            SelItem::Assign(..) => return Err(SqlError::new(141, "A SELECT statement that assigns a value to a variable must not be combined with data-retrieval operations.")),
            SelItem::Expr(e, alias) => {
                let (ty, nullable, identity) = infer(ctx, e, cols)?;
                let name = alias.clone().unwrap_or_else(|| if let Expr::Col(c) = e { cols.iter().find(|x| x.name.eq_ignore_ascii_case(c)).map(|x| x.name.clone()).unwrap_or(c.clone()) } else { String::new() });
                items.push((e.clone(), name.clone()));
                meta.push(OutCol { name, ty, nullable, identity });
            }
        }
    }
    let top = match &s.top {
        None => None,
        Some(e) => match eval(ctx, e, None, cols)? {
            Value::Int(n) if n >= 0 => Some(n as usize),
            v => return Err(SqlError::new(1060, format!("The number of rows provided for a TOP or FETCH clauses row count parameter must be an integer (got {v})."))),
        },
    };
    let coerce_row = |vals: Vec<Value>| -> Result<Row, SqlError> { vals.into_iter().zip(&meta).map(|(v, m)| v.coerce(&m.ty, &m.name)).collect() };
    // An index's order answers a keyset page or an ID range without a scan (and without the sort).
    if let Some(rows) = table.and_then(|t| keyset_seek(ctx, s, t, pending)) {
        let rows = rows.into_iter().map(|r| coerce_row(items.iter().map(|(e, _)| eval(ctx, e, Some(r), cols)).collect::<Result<_, _>>()?)).collect::<Result<_, _>>()?;
        return Ok((meta, rows));
    }
    let mut matching: Vec<&Row> = Vec::new();
    for r in committed.iter().chain(pending) {
        let hit = match &s.filter {
            None => true,
            Some(c) => eval_cond(ctx, c, Some(r), cols)? == Some(true),
        };
        if hit {
            matching.push(r);
        }
    }
    if items.iter().any(|(e, _)| has_agg(e)) {
        let vals: Vec<Value> = items.iter().map(|(e, _)| eval_agg(ctx, e, &matching, cols)).collect::<Result<_, _>>()?;
        let rows = if top == Some(0) { Vec::new() } else { vec![coerce_row(vals)?] };
        return Ok((meta, rows));
    }
    if s.from.is_none() {
        let vals: Vec<Value> = items.iter().map(|(e, _)| eval(ctx, e, None, cols)).collect::<Result<_, _>>()?;
        let rows = if top == Some(0) { Vec::new() } else { vec![coerce_row(vals)?] };
        return Ok((meta, rows));
    }
    if !s.order.is_empty() {
        // ORDER BY may name a select alias.
        let order: Vec<(Expr, bool)> = s
            .order
            .iter()
            .map(|(e, d)| match e {
                Expr::Col(n) if !cols.iter().any(|c| c.name.eq_ignore_ascii_case(n)) => items.iter().find(|(_, a)| a.eq_ignore_ascii_case(n)).map(|(e, _)| (e.clone(), *d)).unwrap_or((e.clone(), *d)),
                _ => (e.clone(), *d),
            })
            .collect();
        let mut keyed: Vec<(Vec<Value>, &Row)> = matching.into_iter().map(|r| Ok((order.iter().map(|(e, _)| eval(ctx, e, Some(r), cols)).collect::<Result<Vec<_>, SqlError>>()?, r))).collect::<Result<_, SqlError>>()?;
        keyed.sort_by(|a, b| {
            for (i, (_, desc)) in order.iter().enumerate() {
                let o = a.0[i].order_cmp(&b.0[i]);
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        matching = keyed.into_iter().map(|(_, r)| r).collect();
    }
    if let Some(n) = top {
        matching.truncate(n);
    }
    let rows = matching.into_iter().map(|r| coerce_row(items.iter().map(|(e, _)| eval(ctx, e, Some(r), cols)).collect::<Result<_, _>>()?)).collect::<Result<_, _>>()?;
    Ok((meta, rows))
}

/// Type, nullability and identity flag of a select-list expression.
fn infer(ctx: &Ctx, e: &Expr, cols: &[Column]) -> Result<(SqlType, bool, bool), SqlError> {
    Ok(match e {
        Expr::Col(n) => {
            let c = cols.iter().find(|c| c.name.eq_ignore_ascii_case(n)).ok_or_else(|| invalid_column(n))?;
            (c.ty, c.nullable, c.identity)
        }
        Expr::Var(v) => match v.as_str() {
            "@@spid" => (SqlType::SmallInt, false, false),
            "@@trancount" | "@@rowcount" => (SqlType::Int, false, false),
            "@@version" | "@@servername" => (SqlType::NVarChar(Some(300)), false, false),
            "@@identity" => (SqlType::Decimal { precision: 38, scale: 0 }, true, false),
            _ => match ctx.vars.get(v) {
                Some(Var { ty: Some(t), .. }) => (*t, true, false),
                Some(Var { value, .. }) => (lit_type(value), true, false),
                None => return Err(SqlError::new(137, format!("Must declare the scalar variable \"{v}\"."))),
            },
        },
        Expr::Lit(v) => (lit_type(v), v.is_null(), false),
        Expr::Agg(Agg::Count, _) => (SqlType::Int, false, false),
        Expr::Agg(Agg::CountBig, _) => (SqlType::BigInt, false, false),
        Expr::Agg(Agg::Sum, Some(a)) => match infer(ctx, a, cols)?.0 {
            SqlType::Decimal { scale, .. } | SqlType::Numeric { scale, .. } => (SqlType::Decimal { precision: 38, scale }, true, false),
            SqlType::BigInt => (SqlType::BigInt, true, false),
            _ => (SqlType::Int, true, false),
        },
        Expr::Agg(_, Some(a)) => (infer(ctx, a, cols)?.0, true, false),
        Expr::Agg(_, None) => return Err(SqlError::new(102, "Only COUNT and COUNT_BIG take *.")),
        Expr::Func(f, args) => match f.as_str() {
            "ISNULL" | "COALESCE" => {
                let first = args.first().ok_or_else(|| SqlError::new(174, format!("The {f} function requires arguments.")))?;
                let (t, _, _) = infer(ctx, first, cols)?;
                let mut nullable = true;
                for a in args {
                    if !infer(ctx, a, cols)?.1 {
                        nullable = false;
                    }
                }
                (t, nullable, false)
            }
            "GETUTCDATE" | "GETDATE" => (SqlType::DateTime2(3), false, false),
            "SYSUTCDATETIME" | "SYSDATETIME" => (SqlType::DateTime2(7), false, false),
            "OBJECT_ID" => (SqlType::Int, true, false),
            "DB_NAME" => (SqlType::NVarChar(Some(128)), true, false),
            "DB_ID" => (SqlType::SmallInt, true, false),
            "TYPE_NAME" => (SqlType::NVarChar(Some(128)), true, false),
            "QUOTENAME" => (SqlType::NVarChar(Some(258)), true, false),
            // sql_variant in SQL Server; every property this server knows is text.
            "SERVERPROPERTY" => (SqlType::NVarChar(Some(128)), true, false),
            "SCOPE_IDENTITY" => (SqlType::Decimal { precision: 38, scale: 0 }, true, false),
            other => return Err(SqlError::new(195, format!("'{other}' is not a recognized built-in function name (tds-test-server subset)."))),
        },
        Expr::Bin(a, _, b) => {
            let (ta, na, _) = infer(ctx, a, cols)?;
            let (tb, nb, _) = infer(ctx, b, cols)?;
            let t = match (ta, tb) {
                (SqlType::NVarChar(_) | SqlType::VarChar(..), SqlType::NVarChar(_) | SqlType::VarChar(..)) => SqlType::NVarChar(None),
                (SqlType::Decimal { .. } | SqlType::Numeric { .. }, _) => ta,
                (_, SqlType::Decimal { .. } | SqlType::Numeric { .. }) => tb,
                (SqlType::BigInt, _) | (_, SqlType::BigInt) => SqlType::BigInt,
                _ => ta,
            };
            (t, na || nb, false)
        }
        Expr::Neg(a) => {
            let (t, n, _) = infer(ctx, a, cols)?;
            (t, n, false)
        }
        Expr::Cast(a, t) => (*t, infer(ctx, a, cols)?.1, false),
    })
}

fn lit_type(v: &Value) -> SqlType {
    match v {
        Value::Null => SqlType::Int,
        Value::Bool(_) => SqlType::Bit,
        Value::Int(i) if i32::try_from(*i).is_ok() => SqlType::Int,
        Value::Int(_) => SqlType::BigInt,
        Value::Decimal { mantissa, scale } => {
            let digits = mantissa.unsigned_abs().to_string().len() as u8;
            SqlType::Decimal { precision: digits.max(*scale + 1).min(38), scale: *scale }
        }
        Value::Float(_) => SqlType::Decimal { precision: 38, scale: 10 },
        Value::Str(s) => SqlType::NVarChar(Some(s.chars().count().clamp(1, 4000) as u16)),
        Value::DateTime2(_) => SqlType::DateTime2(7),
        Value::Bytes(b) => SqlType::VarBinary(Some(b.len().clamp(1, 8000) as u16)),
        Value::Variant(_) => SqlType::SqlVariant,
    }
}

fn eval(ctx: &Ctx, e: &Expr, row: Option<&Row>, cols: &[Column]) -> Result<Value, SqlError> {
    Ok(match e {
        Expr::Col(n) => {
            let i = cols.iter().position(|c| c.name.eq_ignore_ascii_case(n)).ok_or_else(|| invalid_column(n))?;
            match row {
                Some(r) => r[i].clone(),
                None => return Err(SqlError::new(207, format!("Invalid column name '{n}' (no row here)."))),
            }
        }
        Expr::Var(v) => match v.as_str() {
            "@@spid" => Value::Int(ctx.session.id as i64),
            "@@trancount" => Value::Int(ctx.session.tx.as_ref().map(|t| t.depth as i64).unwrap_or(0)),
            "@@version" => Value::Str("Microsoft SQL Server 2022 (tds-test-server)".into()),
            "@@servername" => Value::Str(ctx.cat.server_name.clone()),
            "@@identity" => ctx.session.last_identity.map(|i| Value::Decimal { mantissa: i as i128, scale: 0 }).unwrap_or(Value::Null),
            _ => ctx.vars.get(v).map(|x| x.value.clone()).ok_or_else(|| SqlError::new(137, format!("Must declare the scalar variable \"{v}\".")))?,
        },
        Expr::Lit(v) => v.clone(),
        Expr::Agg(..) => return Err(SqlError::new(147, "An aggregate may not appear in the WHERE clause.")),
        Expr::Func(f, args) => {
            let vals: Vec<Value> = args.iter().map(|a| eval(ctx, a, row, cols)).collect::<Result<_, _>>()?;
            apply_func(ctx, f, vals)?
        }
        Expr::Bin(a, op, b) => arith(eval(ctx, a, row, cols)?, op, eval(ctx, b, row, cols)?)?,
        Expr::Neg(a) => arith(Value::Int(0), "-", eval(ctx, a, row, cols)?)?,
        Expr::Cast(a, t) => eval(ctx, a, row, cols)?.coerce(t, "CAST")?,
    })
}

fn eval_agg(ctx: &Ctx, e: &Expr, rows: &[&Row], cols: &[Column]) -> Result<Value, SqlError> {
    Ok(match e {
        Expr::Agg(kind, arg) => {
            let vals: Vec<Value> = match arg {
                None => return Ok(Value::Int(rows.len() as i64)),
                Some(a) => rows.iter().map(|r| eval(ctx, a, Some(r), cols)).filter(|v| !matches!(v, Ok(Value::Null))).collect::<Result<_, _>>()?,
            };
            match kind {
                Agg::Count | Agg::CountBig => Value::Int(vals.len() as i64),
                Agg::Min => vals.into_iter().reduce(|a, b| if b.order_cmp(&a).is_lt() { b } else { a }).unwrap_or(Value::Null),
                Agg::Max => vals.into_iter().reduce(|a, b| if b.order_cmp(&a).is_gt() { b } else { a }).unwrap_or(Value::Null),
                Agg::Sum => {
                    let mut acc: Option<Value> = None;
                    for v in vals {
                        acc = Some(match acc {
                            None => v,
                            Some(a) => arith(a, "+", v)?,
                        });
                    }
                    acc.unwrap_or(Value::Null)
                }
            }
        }
        Expr::Func(f, args) => {
            let vals: Vec<Value> = args.iter().map(|a| eval_agg(ctx, a, rows, cols)).collect::<Result<_, _>>()?;
            apply_func(ctx, f, vals)?
        }
        Expr::Bin(a, op, b) => arith(eval_agg(ctx, a, rows, cols)?, op, eval_agg(ctx, b, rows, cols)?)?,
        Expr::Neg(a) => arith(Value::Int(0), "-", eval_agg(ctx, a, rows, cols)?)?,
        Expr::Cast(a, t) => eval_agg(ctx, a, rows, cols)?.coerce(t, "CAST")?,
        Expr::Col(n) => return Err(SqlError::new(8120, format!("Column '{n}' is invalid in the select list because it is not contained in either an aggregate function or the GROUP BY clause."))),
        other => eval(ctx, other, None, cols)?,
    })
}

fn apply_func(ctx: &Ctx, f: &str, vals: Vec<Value>) -> Result<Value, SqlError> {
    Ok(match f {
        "ISNULL" | "COALESCE" => vals.into_iter().find(|v| !v.is_null()).unwrap_or(Value::Null),
        "GETUTCDATE" | "GETDATE" => Value::now().coerce(&SqlType::DateTime2(3), f)?,
        "SYSUTCDATETIME" | "SYSDATETIME" => Value::now(),
        "DB_NAME" => Value::Str(ctx.cat.dbs.get(&ctx.session.db.to_lowercase()).map(|d| d.name.clone()).unwrap_or_else(|| ctx.session.db.clone())),
        "DB_ID" => {
            let name = match vals.first() {
                Some(Value::Str(n)) => n.to_lowercase(),
                Some(Value::Null) => return Ok(Value::Null),
                _ => ctx.session.db.to_lowercase(),
            };
            ctx.cat.dbs.get(&name).map(|d| Value::Int(d.id as i64)).unwrap_or(Value::Null)
        }
        "SERVERPROPERTY" => match vals.first() {
            Some(Value::Str(p)) => match p.to_ascii_lowercase().as_str() {
                "servername" | "machinename" | "computernamephysicalnetbios" => Value::Str(ctx.cat.machine_name.clone()),
                "productversion" => Value::Str("16.0.4135.4".into()),
                "edition" => Value::Str("Developer Edition (64-bit)".into()),
                "engineedition" => Value::Int(3),
                // InstanceName: NULL for a default instance.
                _ => Value::Null,
            },
            _ => Value::Null,
        },
        "QUOTENAME" => match vals.first() {
            Some(Value::Str(n)) => Value::Str(format!("[{}]", n.replace(']', "]]"))),
            _ => Value::Null,
        },
        "TYPE_NAME" => match vals.first() {
            Some(Value::Int(id)) => crate::syscolumns::type_name(*id).map(|n| Value::Str(n.into())).unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "SCOPE_IDENTITY" => ctx.session.last_identity.map(|i| Value::Decimal { mantissa: i as i128, scale: 0 }).unwrap_or(Value::Null),
        "OBJECT_ID" => {
            let Some(Value::Str(name)) = vals.first() else { return Ok(Value::Null) };
            let parsed = crate::sql::parse_batch(&format!("DELETE {name}"));
            let Ok(p) = parsed else { return Ok(Value::Null) };
            let Some(Stmt::Delete { table, .. }) = p.first().map(|p| &p.stmt) else { return Ok(Value::Null) };
            let k = ctx.session.key(table);
            ctx.cat.table(&k).map(|t| Value::Int(t.object_id as i64)).unwrap_or(Value::Null)
        }
        other => return Err(SqlError::new(195, format!("'{other}' is not a recognized built-in function name (tds-test-server subset)."))),
    })
}

fn arith(a: Value, op: &str, b: Value) -> Result<Value, SqlError> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    if let (Value::Str(x), Value::Str(y), "+") = (&a, &b, op) {
        return Ok(Value::Str(format!("{x}{y}")));
    }
    let overflow = || SqlError::new(8115, "Arithmetic overflow error converting expression to data type bigint.");
    match (&a, &b) {
        (Value::Int(x), Value::Int(y)) => Ok(Value::Int(match op {
            "+" => x.checked_add(*y),
            "-" => x.checked_sub(*y),
            "*" => x.checked_mul(*y),
            _ => {
                if *y == 0 {
                    return Err(SqlError::new(8134, "Divide by zero error encountered."));
                }
                x.checked_div(*y)
            }
        }
        .ok_or_else(overflow)?)),
        _ => {
            let dec = |v: &Value| -> Result<(i128, u8), SqlError> {
                match v {
                    Value::Int(i) => Ok((*i as i128, 0)),
                    Value::Decimal { mantissa, scale } => Ok((*mantissa, *scale)),
                    other => Err(SqlError::new(8117, format!("Operand {other} is invalid for operator {op}."))),
                }
            };
            let (ma, sa) = dec(&a)?;
            let (mb, sb) = dec(&b)?;
            let s = sa.max(sb);
            let ma = crate::types::rescale(ma, sa, s).ok_or_else(overflow)?;
            let mb = crate::types::rescale(mb, sb, s).ok_or_else(overflow)?;
            match op {
                "+" => Ok(Value::Decimal { mantissa: ma.checked_add(mb).ok_or_else(overflow)?, scale: s }),
                "-" => Ok(Value::Decimal { mantissa: ma.checked_sub(mb).ok_or_else(overflow)?, scale: s }),
                _ => Err(SqlError::new(8117, format!("Operator {op} on decimals is outside the tds-test-server subset."))),
            }
        }
    }
}

fn eval_cond(ctx: &Ctx, c: &Cond, row: Option<&Row>, cols: &[Column]) -> Result<Option<bool>, SqlError> {
    Ok(match c {
        Cond::And(a, b) => match (eval_cond(ctx, a, row, cols)?, eval_cond(ctx, b, row, cols)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (eval_cond(ctx, a, row, cols)?, eval_cond(ctx, b, row, cols)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Not(a) => eval_cond(ctx, a, row, cols)?.map(|b| !b),
        Cond::Cmp(a, op, b) => {
            let (x, y) = (eval(ctx, a, row, cols)?, eval(ctx, b, row, cols)?);
            let o = match (&x, &y) {
                (Value::Str(s), Value::Str(t)) => Some(cmp_ci(s, t)),
                _ => x.sql_cmp(&y),
            };
            if o.is_none() && !x.is_null() && !y.is_null() {
                return Err(SqlError::new(245, format!("Conversion failed when comparing {x} with {y}.")));
            }
            o.map(|o| match op {
                CmpOp::Eq => o.is_eq(),
                CmpOp::Ne => o.is_ne(),
                CmpOp::Lt => o.is_lt(),
                CmpOp::Le => o.is_le(),
                CmpOp::Gt => o.is_gt(),
                CmpOp::Ge => o.is_ge(),
            })
        }
        Cond::IsNull(a, neg) => Some(eval(ctx, a, row, cols)?.is_null() != *neg),
        Cond::In(a, list, neg) => {
            let x = eval(ctx, a, row, cols)?;
            if x.is_null() {
                return Ok(None);
            }
            let mut found = false;
            for e in list {
                if x.sql_cmp(&eval(ctx, e, row, cols)?) == Some(std::cmp::Ordering::Equal) {
                    found = true;
                }
            }
            Some(found != *neg)
        }
        Cond::Between(a, lo, hi) => {
            let x = eval(ctx, a, row, cols)?;
            match (x.sql_cmp(&eval(ctx, lo, row, cols)?), x.sql_cmp(&eval(ctx, hi, row, cols)?)) {
                (Some(l), Some(h)) => Some(l.is_ge() && h.is_le()),
                _ => None,
            }
        }
        Cond::Exists(s, neg) => Some(run_select(ctx, s)?.1.is_empty() == *neg),
    })
}
