//! MonitoringDB over TDS: `dbo.Servers` as the registry, `dbo.PerfSnapshotRun` loaded with
//! TDS bulk load (`INSERT BULK`, the BCP path) unit by unit (`writer.rs`), and
//! `dbo.DBAToolsSyncLog` as the ledger (`ledger.rs`), so the toolkit's own T-SQL sync procedure
//! sees the same state as perfcopy.
//!
//! Application locks (`sp_getapplock`, session owner, on their own connection) let several
//! perfcopy runs load one MonitoringDB at once: one per source (a second run of a source is
//! refused, naming the holder from `dbo.PerfcopyLocks`, see [`locks`]) and one per ServerID
//! whose rows a run copies (taken in ID order after the key pass; a run that copies other
//! sources of the same server waits). Table names are fixed; values are always parameters. `perfcopy bench` loads a scratch table instead ([`scratch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;

use crate::defaults;
use crate::error::Result;
use crate::mssql::{runtime, ConnSpec, SqlClient};
use crate::schema::{target_columns, ChildTable, Column, DeclaredColumn, RUN};
use crate::sink::{ChildTableState, FinalMark, Load, LoadWriter, LockGuard, LockedSource, Recorded, SourceMeta, Target};
use crate::source::{BatchIter, Source};
use crate::transform::remap::ServerIdMap;

mod existing;
mod ledger;
mod locks;
pub mod scratch;
mod writer;

use existing::PerServer;
use ledger::Ledger;
pub use ledger::{SYNCLOG_DDL, SYNCSOURCE_DDL};
pub use writer::{bulk_insert, bulk_insert_rows, bulk_insert_token_rows};
use writer::UnitWriter;

/// Bulk-load settings.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// `TABLOCK`: a bulk update lock for each load (faster; blocks readers of the table).
    pub tablock: bool,
    /// Send each unit sorted by (ServerID, SnapshotUTC) with an `ORDER` hint.
    pub order_hint: bool,
    /// Attempts per unit on transient errors.
    pub retries: u32,
    /// First backoff; doubles per attempt.
    pub backoff: Duration,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions { tablock: true, order_hint: false, retries: defaults::RETRIES, backoff: defaults::RETRY_BACKOFF }
    }
}

/// A target table's columns as declared.
#[derive(Default)]
struct Declared {
    /// By lowercase name.
    columns: BTreeMap<String, DeclaredColumn>,
    /// Columns a bulk load must give a value (lowercase name -> name).
    must_fill: BTreeMap<String, String>,
}

/// A MonitoringDB.
pub struct MonitoringDb {
    conn: ConnSpec,
    label: String,
    options: BulkOptions,
    /// The application locks this run holds, named in dbo.PerfcopyLocks once it writes.
    held: Arc<std::sync::Mutex<Vec<String>>>,
}

impl MonitoringDb {
    /// A target; connects lazily.
    pub fn new(conn: ConnSpec, options: BulkOptions) -> MonitoringDb {
        MonitoringDb { label: conn.label().to_string(), conn, options, held: Arc::default() }
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        runtime()?.block_on(f)
    }

    /// The columns of `dbo.<table>` as INFORMATION_SCHEMA declares them, by lowercase name
    /// (empty: no such table), and those a bulk load must give a value: NOT NULL, without a
    /// default, neither identity nor computed nor rowversion.
    async fn declared_columns(&self, client: &mut SqlClient, table: &str) -> Result<Declared> {
        let rows = query_rows(
            &self.conn,
            client,
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION, IS_NULLABLE, COLUMN_DEFAULT, COLLATION_NAME \
             FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2",
            &[&"dbo", &table],
        )
        .await?;
        let mut found = Declared::default();
        for r in &rows {
            let name: &str = r.try_get(0).ok().flatten().unwrap_or("");
            let t: &str = r.try_get(1).ok().flatten().unwrap_or("");
            let nullable: &str = r.try_get(6).ok().flatten().unwrap_or("YES");
            let default: Option<&str> = r.try_get(7).ok().flatten();
            let t = t.to_ascii_lowercase();
            if nullable.eq_ignore_ascii_case("NO") && default.is_none() && t != "timestamp" && t != "rowversion" {
                found.must_fill.insert(name.to_ascii_lowercase(), name.to_string());
            }
            found.columns.insert(
                name.to_ascii_lowercase(),
                DeclaredColumn {
                    data_type: t,
                    precision: r.try_get(2).ok().flatten(),
                    scale: r.try_get(3).ok().flatten(),
                    max_chars: r.try_get(4).ok().flatten(),
                    datetime_precision: r.try_get(5).ok().flatten(),
                    collation: r.try_get::<&str, _>(8).ok().flatten().map(str::to_string),
                },
            );
        }
        if !found.must_fill.is_empty() {
            // Identity and computed columns fill themselves (INFORMATION_SCHEMA does not say).
            let rows = query_rows(
                &self.conn,
                client,
                "SELECT name FROM sys.columns WHERE object_id = OBJECT_ID(@P1) AND (is_identity = 1 OR is_computed = 1)",
                &[&format!("dbo.{table}").as_str()],
            )
            .await?;
            for r in &rows {
                let name: &str = r.try_get(0).ok().flatten().unwrap_or("");
                found.must_fill.remove(&name.to_ascii_lowercase());
            }
        }
        Ok(found)
    }

    /// Checks that `dbo.<table>`, as `found` declares it, has every column of `columns` with
    /// a type that holds its values, and no column a bulk load must fill that `columns` lacks.
    fn check_columns(&self, table: &str, found: &Declared, columns: &[Column]) -> Result<()> {
        for c in columns {
            let Some(d) = found.columns.get(&c.name.to_ascii_lowercase()) else {
                return Err(self.conn.error(format!("dbo.{table} has no column '{}'", c.name)));
            };
            if let Err(why) = c.sql.fits_in(d) {
                return Err(self.conn.error(format!("dbo.{table}.{} is {}, {why}", c.name, d.sql_name())));
            }
        }
        let written: BTreeSet<String> = columns.iter().map(|c| c.name.to_ascii_lowercase()).collect();
        if let Some((_, name)) = found.must_fill.iter().find(|(k, _)| !written.contains(*k)) {
            return Err(self.conn.error(format!(
                "dbo.{table}.{name} is NOT NULL without a default, and the sources have no such column, so no row could be loaded; give it a DEFAULT, allow NULL, or drop it"
            )));
        }
        Ok(())
    }

    /// Checks that the target table has the columns perfcopy writes, with their types.
    async fn check_table(&self, client: &mut SqlClient) -> Result<()> {
        let found = self.declared_columns(client, RUN.name).await?;
        if found.columns.is_empty() {
            return Err(self.conn.error(format!("table {} does not exist in database '{}'", RUN.sql_name(), self.conn.database())));
        }
        self.check_columns(RUN.name, &found, target_columns())
    }
}

/// Runs a query and collects its first result's rows.
pub(super) async fn query_rows(conn: &ConnSpec, client: &mut SqlClient, sql: &str, params: &[&dyn tiberius::ToSql]) -> Result<Vec<tiberius::Row>> {
    client
        .query(sql, params)
        .await
        .map_err(|e| conn.sql_error(&format!("running '{}'", first_words(sql)), e))?
        .into_first_result()
        .await
        .map_err(|e| conn.sql_error(&format!("reading the result of '{}'", first_words(sql)), e))
}

/// Whether each of `tables` (`dbo.Name`, fixed names only) exists as a user table, in one query.
pub(super) async fn user_tables_exist(conn: &ConnSpec, client: &mut SqlClient, tables: &[&str]) -> Result<Vec<bool>> {
    let cols: Vec<String> = tables.iter().enumerate().map(|(i, t)| format!("OBJECT_ID(N'{t}', N'U') AS t{i}")).collect();
    let rows = query_rows(conn, client, &format!("SELECT {}", cols.join(", ")), &[]).await?;
    Ok((0..tables.len()).map(|i| rows.first().and_then(|r| r.try_get::<i32, _>(i).ok().flatten()).is_some()).collect())
}

/// The `CREATE TABLE` of a child table perfcopy creates: its own BIGINT identity, then
/// [`ChildTable::target_columns`], a VARCHAR with its source's collation when known (else the
/// database default). `Err` names a column whose recorded collation is not a collation name
/// (no SQL is built from it).
pub(super) fn create_table_sql(table: &ChildTable) -> std::result::Result<String, String> {
    let identity = table.identity.map_or_else(|| format!("{}ID", table.name), str::to_string);
    let mut cols = vec![format!("[{}] BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY", identity.replace(']', "]]"))];
    for c in table.target_columns() {
        let collate = match c.collation {
            Some(name) if crate::schema::is_collation_name(name) => format!(" COLLATE {name}"),
            Some(name) => return Err(format!("cannot create {}: column {} records the collation '{}', which is not a collation name (letters, digits and '_' only)", table.sql_name(), c.name, name.escape_debug())),
            None => String::new(),
        };
        cols.push(format!("[{}] {}{collate}{}", c.name.replace(']', "]]"), c.sql.sql_name(), if c.nullable { " NULL" } else { " NOT NULL" }));
    }
    Ok(format!("CREATE TABLE [dbo].[{}] ({})", table.name.replace(']', "]]"), cols.join(", ")))
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}


/// `sp_getapplock` (exclusive, owned by the session) with a timeout in ms (-1: wait); the
/// procedure's result: 0 or 1 granted, negative not.
async fn get_applock(conn: &ConnSpec, client: &mut SqlClient, resource: &str, timeout_ms: i32) -> Result<i32> {
    let rows = query_rows(
        conn,
        client,
        "DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = @P2; SELECT @r AS result;",
        &[&resource, &timeout_ms],
    )
    .await?;
    Ok(rows.first().and_then(|r| r.try_get(0).ok().flatten()).unwrap_or(-999))
}

/// An application lock's resource name (`sp_getapplock` takes at most 255 characters).
fn lock_resource(kind: &str, name: &str) -> String {
    let r = format!("perfcopy {kind}: {name}");
    if r.chars().count() <= 255 {
        r
    } else {
        format!("{}…{:016x}", r.chars().take(230).collect::<String>(), crate::sink::stable_hash(name))
    }
}

impl Target for MonitoringDb {
    fn label(&self) -> &str {
        &self.label
    }

    fn lock_sources(&self, sources: &[LockedSource]) -> Result<LockGuard> {
        let mut seen = BTreeSet::new();
        let wanted: Vec<(String, &str)> = sources.iter().filter(|s| seen.insert(s.identity.clone())).map(|s| (lock_resource("source", &s.identity), s.label.as_str())).collect();
        let rt = runtime()?;
        let client = rt.block_on(async {
            let mut client = self.conn.connect().await?;
            self.check_table(&mut client).await?;
            for (resource, label) in &wanted {
                if get_applock(&self.conn, &mut client, resource, 0).await? < 0 {
                    let holder = locks::holder(&self.conn, &mut client, resource).await?;
                    return Err(self.conn.error(format!(
                        "source '{label}' is being copied into this MonitoringDB by another perfcopy run ({}); wait for it to finish, or leave the source out",
                        holder.unwrap_or_else(|| format!("it holds the application lock '{resource}'"))
                    )));
                }
            }
            Ok(client)
        })?;
        let resources = wanted.into_iter().map(|(r, _)| r).collect();
        Ok(Box::new(locks::AppLocks::held(rt, client, self.conn.clone(), resources, self.held.clone())?))
    }

    fn lock_servers(&self, ids: &[i32], waiting: &dyn Fn(&str)) -> Result<LockGuard> {
        let ids: BTreeSet<i32> = ids.iter().copied().collect();
        let rt = runtime()?;
        let mut resources = Vec::new();
        let client = rt.block_on(async {
            let mut client = self.conn.connect().await?;
            for id in ids {
                let resource = lock_resource("ServerID", &id.to_string());
                if get_applock(&self.conn, &mut client, &resource, 0).await? < 0 {
                    let holder = locks::holder(&self.conn, &mut client, &resource).await?;
                    waiting(&format!("ServerID {id}: waiting for another perfcopy run that copies rows of it ({})", holder.unwrap_or_else(|| "its holder did not say who it is yet".into())));
                    if get_applock(&self.conn, &mut client, &resource, -1).await? < 0 {
                        return Err(self.conn.error(format!("could not take the application lock '{resource}'")));
                    }
                }
                resources.push(resource);
            }
            Ok(client)
        })?;
        Ok(Box::new(locks::AppLocks::held(rt, client, self.conn.clone(), resources, self.held.clone())?))
    }

    fn known_servers(&self) -> Result<ServerIdMap> {
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            let rows = query_rows(&self.conn, &mut client, "SELECT ServerID, ServerName FROM dbo.Servers", &[]).await?;
            let mut map = ServerIdMap::new();
            for r in rows {
                let id: i32 = r.try_get(0).ok().flatten().unwrap_or(0);
                let name: &str = r.try_get(1).ok().flatten().unwrap_or("");
                map.insert(name, id).map_err(|m| self.conn.error(format!("dbo.Servers: {m}")))?;
            }
            Ok(map)
        })
    }

    fn register_servers(&self, names: &BTreeSet<String>, _known: &ServerIdMap) -> Result<Vec<(String, i32)>> {
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            client.simple_query("BEGIN TRANSACTION").await.map_err(|e| self.conn.sql_error("registering servers", e))?.into_results().await.map_err(|e| self.conn.sql_error("registering servers", e))?;
            // Runs registering at once take turns (the lock ends with the transaction), and a
            // name another run registered since this one read dbo.Servers keeps its ID.
            query_rows(
                &self.conn,
                &mut client,
                "DECLARE @r int; EXEC @r = sp_getapplock @Resource = 'perfcopy: dbo.Servers', @LockMode = 'Exclusive', @LockOwner = 'Transaction', @LockTimeout = -1; SELECT @r AS result;",
                &[],
            )
            .await?;
            let mut added = Vec::new();
            for name in names {
                let found = query_rows(&self.conn, &mut client, "SELECT ServerID FROM dbo.Servers WHERE ServerName = @P1", &[&name.as_str()]).await?;
                if let Some(id) = found.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()) {
                    added.push((name.clone(), id));
                    continue;
                }
                let rows = query_rows(
                    &self.conn,
                    &mut client,
                    "INSERT INTO dbo.Servers (ServerName) OUTPUT INSERTED.ServerID VALUES (@P1)",
                    &[&name.as_str()],
                )
                .await?;
                let id: i32 = rows
                    .first()
                    .and_then(|r| r.try_get(0).ok().flatten())
                    .ok_or_else(|| self.conn.error(format!("dbo.Servers returned no ServerID for '{name}'")))?;
                added.push((name.clone(), id));
            }
            client.simple_query("COMMIT TRANSACTION").await.map_err(|e| self.conn.sql_error("registering servers", e))?.into_results().await.map_err(|e| self.conn.sql_error("registering servers", e))?;
            Ok(added)
        })
    }

    fn existing_keys(&self, ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter> {
        let ranges: Vec<(i32, i64, i64)> = ranges.iter().map(|(&s, &(lo, hi))| (s, lo, hi)).collect();
        let conn = self.conn.clone();
        Ok(Box::new(PerServer::new(conn, ranges, true)))
    }

    fn existing_rows(&self, ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter> {
        let ranges: Vec<(i32, i64, i64)> = ranges.iter().flat_map(|(&s, r)| r.iter().map(move |&(lo, hi)| (s, lo, hi))).collect();
        Ok(Box::new(PerServer::new(self.conn.clone(), ranges, false)))
    }

    /// One GROUP BY over dbo.PerfSnapshotRun, evaluated by SQL Server (2016 or later:
    /// DATEDIFF_BIG); see [`crate::checksum`] for what each column's items compute.
    fn value_checksums(&self, servers: &[i32], columns: &[crate::schema::Column], window: &crate::transform::Window) -> Result<Option<Vec<crate::sink::DayChecksums>>> {
        if servers.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut items = Vec::with_capacity(columns.len());
        for c in columns {
            items.push(crate::checksum::tsql(c.name, c.sql).ok_or_else(|| self.conn.error(format!("verify --values: no server-side checksum for column '{}' ({})", c.name, c.sql.sql_name())))?);
        }
        let day = format!("DATEDIFF(DAY, '19700101', [{}])", crate::schema::RUN.snapshot_time);
        let ids: Vec<String> = servers.iter().map(|i| i.to_string()).collect();
        // The window as `copy` applies it: since inclusive, until exclusive, in ms.
        let ms = format!("DATEDIFF_BIG(MILLISECOND, '19700101', [{}])", crate::schema::RUN.snapshot_time);
        let mut within = String::new();
        if let Some(s) = window.since {
            within.push_str(&format!(" AND {ms} >= {s}"));
        }
        if let Some(u) = window.until {
            within.push_str(&format!(" AND {ms} < {u}"));
        }
        let sql = format!(
            "SELECT [{sid}], {day}, COUNT_BIG(*), {items} FROM {table} WHERE [{sid}] IN ({ids}){within} GROUP BY [{sid}], {day}",
            sid = crate::schema::RUN.server_id,
            items = items.join(", "),
            table = crate::schema::RUN.sql_name(),
            ids = ids.join(", ")
        );
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            let rows = query_rows(&self.conn, &mut client, &sql, &[]).await?;
            let bad = |what: &str| self.conn.error(format!("verify --values: the checksum query returned no {what}"));
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let mut sums = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    let non_null: i64 = r.try_get(3 + 2 * i).ok().flatten().ok_or_else(|| bad("count"))?;
                    let sum: i64 = r.try_get(4 + 2 * i).ok().flatten().ok_or_else(|| bad("sum"))?;
                    sums.push(crate::checksum::ColumnSum { non_null: non_null as u64, sum });
                }
                out.push(crate::sink::DayChecksums {
                    server_id: r.try_get(0).ok().flatten().ok_or_else(|| bad("ServerID"))?,
                    day: r.try_get::<i32, _>(1).ok().flatten().ok_or_else(|| bad("day"))? as i64,
                    rows: r.try_get::<i64, _>(2).ok().flatten().ok_or_else(|| bad("row count"))? as u64,
                    columns: sums,
                });
            }
            Ok(Some(out))
        })
    }

    fn watermark(&self, source: &dyn Source) -> Result<Recorded> {
        if source.facts().is_none() {
            return Ok(Recorded::Nothing);
        }
        self.block_on(ledger::recorded(&self.conn, source))
    }

    fn sync_history(&self, source: &dyn Source) -> Result<crate::sink::SyncHistory> {
        self.block_on(ledger::history(&self.conn, source))
    }

    fn child_tables(&self, tables: &[ChildTable]) -> Result<Vec<ChildTableState>> {
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            let mut out = Vec::with_capacity(tables.len());
            for t in tables {
                let found = self.declared_columns(&mut client, t.name).await?;
                if found.columns.is_empty() {
                    out.push(ChildTableState::Missing);
                    continue;
                }
                self.check_columns(t.name, &found, &t.target_columns())?;
                out.push(ChildTableState::Ready);
            }
            Ok(out)
        })
    }

    fn create_child_table(&self, table: &ChildTable) -> Result<()> {
        let sql = create_table_sql(table).map_err(|m| self.conn.error(m))?;
        self.block_on(async {
            let mut client = self.conn.connect().await?;
            let doing = format!("creating {}", table.sql_name());
            client.simple_query(sql).await.map_err(|e| self.conn.sql_error(&doing, e))?.into_results().await.map_err(|e| self.conn.sql_error(&doing, e))?;
            Ok(())
        })
    }

    fn for_each_child_batch(&self, table: &ChildTable, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
        self.block_on(existing::child_rows(&self.conn, table, f))
    }

    fn begin(&self, _workers: usize, sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>> {
        // The ledger is created only now that the run is known to write (not when it is
        // refused, e.g. for unknown servers), and only when some source is recorded in it.
        if sources.iter().any(|m| m.watermarks) {
            self.block_on(ledger::create_tables(&self.conn))?;
        }
        // Now that it writes, the run names itself as the holder of its locks.
        let held: Vec<String> = self.held.lock().map(|h| h.clone()).unwrap_or_default();
        if !held.is_empty() {
            self.block_on(async {
                let mut client = self.conn.connect().await?;
                locks::name_holder(&self.conn, &mut client, &held, true).await
            })?;
        }
        Ok(Box::new(MonitoringLoad {
            conn: self.conn.clone(),
            options: self.options.clone(),
            sources: Arc::new(sources),
            ledger: Arc::new(Ledger::default()),
            children: Arc::new(children.to_vec()),
        }))
    }
}

/// A load into MonitoringDB.
struct MonitoringLoad {
    conn: ConnSpec,
    options: BulkOptions,
    sources: Arc<Vec<SourceMeta>>,
    ledger: Arc<Ledger>,
    children: Arc<Vec<ChildTable>>,
}

impl Load for MonitoringLoad {
    fn writer(&self, _worker: usize) -> Result<Box<dyn LoadWriter>> {
        let ledger = Some(self.ledger.clone());
        Ok(Box::new(UnitWriter::new(self.conn.clone(), self.options.clone(), self.sources.clone(), RUN.sql_name(), ledger)?.with_children(self.children.clone())))
    }

    fn commit(self: Box<Self>, marks: Vec<FinalMark>) -> Result<()> {
        runtime()?.block_on(self.ledger.record_final(&self.conn, &self.sources, &marks))
    }

    fn abort(self: Box<Self>, reason: &str) {
        // Committed units stay (they are complete and recorded in the ledger); the unit that
        // failed was rolled back.
        let reason: String = self.conn.scrub(reason).chars().take(4000).collect();
        let r = runtime().and_then(|rt| rt.block_on(ledger::record_failure(&self.conn, &self.sources, &reason)));
        if let Err(e) = r {
            tracing::warn!("could not record the failure in dbo.DBAToolsSyncLog: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FoundColumn, SqlType};

    fn table(collation: &str) -> ChildTable {
        ChildTable::discovered(
            "PerfSnapshotQueryPlans",
            vec![
                FoundColumn::new("PerfSnapshotRunID", SqlType::BigInt, false),
                FoundColumn::new("CaptureReason", SqlType::VarChar(50), true).collated(Some(collation.into())),
                FoundColumn::new("SqlText", SqlType::NVarCharMax, true).collated(Some(collation.into())),
            ],
            None,
        )
    }

    #[test]
    fn created_varchar_columns_keep_their_source_collation() {
        let sql = create_table_sql(&table("Cyrillic_General_CI_AS")).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE [dbo].[PerfSnapshotQueryPlans] ([PerfSnapshotQueryPlansID] BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, [PerfSnapshotRunID] BIGINT NOT NULL, \
             [CaptureReason] VARCHAR(50) COLLATE Cyrillic_General_CI_AS NULL, [SqlText] NVARCHAR(MAX) NULL)"
        );
    }

    /// A collation recorded in a stage file's metadata is text anyone can write: it must never
    /// reach the DDL unless it is a collation name.
    #[test]
    fn a_malformed_collation_name_is_refused_and_no_sql_is_built() {
        for bad in ["Latin1_General_CI_AS NULL); DROP TABLE dbo.Servers; --", "Cyrillic General", "", "Greek_CI_AS]", "Ωμέγα_CI_AS"] {
            let err = create_table_sql(&table(bad)).unwrap_err();
            assert!(err.contains("CaptureReason") && err.contains("not a collation name"), "{bad:?}: {err}");
        }
    }
}
