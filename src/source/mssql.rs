//! A DBATools database on SQL Server, read over TDS with tiberius.
//!
//! The table's columns are discovered first (older DBATools tables lack `ServerID`), checked
//! with the same rules as Parquet sources, and rows are streamed in `PerfSnapshotRunID` order
//! with keyset paging (`WHERE PerfSnapshotRunID > @last ORDER BY PerfSnapshotRunID`), one page
//! per batch, so a read holds no long locks and can resume anywhere. Values go straight from
//! the TDS bytes (perfcopy's decoder, or tiberius' rows for column types it does not read) into
//! Arrow columns of the exact types ([`crate::tds::arrow::Builders`]).

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures_util::TryStreamExt;

use crate::error::{Error, Result};
use crate::schema::{ChildTable, DeclaredColumn, FoundColumn, SqlType, Table, PARENT_KEY, RUN};
use crate::mssql::{runtime, ConnSpec, SqlClient};
use crate::source::normalize::{projection_columns, ColumnMatch};
use crate::source::{BatchIter, BatchRuns, ChildReader, KeyRow, Projection, ReadRequest, Source, SourceFacts};
use crate::tds::arrow::Builders;
use crate::tds::decode::{DecodeError, ReplyDecoder};

/// The table read: identifiers come from its description, never from data.
const TABLE: Table = RUN;

/// A DBATools database.
pub struct MssqlSource {
    conn: ConnSpec,
    label: String,
    identity: String,
    /// The table's columns as SQL Server describes them, in Arrow types.
    schema: SchemaRef,
    columns: ColumnMatch,
    /// Optional PerfSnapshotRunID range (inclusive) when a source is split across connections.
    range: Option<(i64, i64)>,
    /// Which `--from` this is (`mssql://host,port/database`), shared by split parts.
    group: String,
    /// What the server reports about the database and table.
    facts: SourceFacts,
    /// `@@SERVERNAME` of the instance.
    server_name: Option<String>,
    /// ServerName of the newest row.
    newest_name: Option<String>,
    /// Cleared when a read finds columns perfcopy's TDS decoder does not read: later reads
    /// (and the other parts of a split source) go straight to tiberius' decoder.
    fast: Arc<std::sync::atomic::AtomicBool>,
    /// The database's child tables, as its catalog describes them.
    children: Arc<Children>,
}

/// A DBATools database's child tables: their descriptions and, per table, the columns the
/// source's table has (lowercase), or why a table cannot be read.
#[derive(Debug, Default)]
struct Children {
    tables: Vec<ChildTable>,
    columns: Vec<Vec<String>>,
    /// Tables with a column of a type outside the type table: (table, why).
    unreadable: Vec<(String, String)>,
}

impl MssqlSource {
    /// Connects, discovers the table's columns and checks them.
    pub fn open(conn: ConnSpec) -> Result<MssqlSource> {
        let rt = runtime()?;
        let label = conn.label().to_string();
        let (schema, facts, server_name, children) = rt.block_on(async {
            let mut client = conn.connect().await?;
            let schema = discover(&conn, &mut client).await?;
            let children = discover_children(&conn, &mut client).await?;
            let (facts, name) = read_facts(&conn, &mut client).await?;
            let newest = client
                .query(format!("SELECT TOP (1) {} FROM {} ORDER BY {} DESC", TABLE.server_name, TABLE.sql_name(), TABLE.identity), &[])
                .await
                .map_err(|e| conn.sql_error("reading the newest row", e))?
                .into_row()
                .await
                .map_err(|e| conn.sql_error("reading the newest row", e))?
                .and_then(|r| r.try_get::<&str, _>(0).ok().flatten().map(str::to_string));
            Ok::<_, Error>((schema, facts, (name, newest), children))
        })?;
        let (server_name, newest_name) = server_name;
        let columns = ColumnMatch::new(&label, &schema)?;
        Ok(MssqlSource {
            identity: format!("mssql://{}/{}/{}", facts.instance, facts.database, TABLE.sql_name()),
            group: format!("mssql://{label}"),
            facts,
            label,
            conn,
            schema,
            columns,
            range: None,
            server_name,
            newest_name,
            fast: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            children: Arc::new(children),
        })
    }

    /// Splits the source into up to `parts` PerfSnapshotRunID ranges of about equal size,
    /// each read on its own connection (in ID order, so the survivor rule is unchanged).
    pub fn split(self, parts: usize) -> Result<Vec<MssqlSource>> {
        if parts <= 1 {
            return Ok(vec![self]);
        }
        let rt = runtime()?;
        let (lo, hi) = rt.block_on(async {
            let mut client = self.conn.connect().await?;
            let row = client
                .query(format!("SELECT MIN({id}) AS lo, MAX({id}) AS hi FROM {}", TABLE.sql_name(), id = TABLE.identity), &[])
                .await
                .map_err(|e| self.conn.sql_error("reading the ID range", e))?
                .into_row()
                .await
                .map_err(|e| self.conn.sql_error("reading the ID range", e))?;
            let get = |i| row.as_ref().and_then(|r| r.try_get::<i64, _>(i).ok().flatten());
            Ok::<_, Error>((get(0), get(1)))
        })?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(vec![self]) };
        let width = ((hi - lo) / parts as i64).max(1);
        let mut out = Vec::new();
        let mut start = lo;
        while start <= hi {
            let end = if out.len() + 1 == parts { hi } else { (start + width - 1).min(hi) };
            out.push(MssqlSource {
                conn: self.conn.clone(),
                label: format!("{} [{start}..{end}]", self.label),
                identity: self.identity.clone(),
                group: self.group.clone(),
                facts: self.facts.clone(),
                schema: self.schema.clone(),
                columns: self.columns.clone(),
                range: Some((start, end)),
                server_name: self.server_name.clone(),
                newest_name: self.newest_name.clone(),
                fast: self.fast.clone(),
                children: self.children.clone(),
            });
            start = end + 1;
        }
        // The outer parts are open-ended, so rows added meanwhile and child rows whose run ID
        // lies below or above every run (orphans) belong to a part too.
        if let Some(first) = out.first_mut() {
            first.range = first.range.map(|(_, hi)| (i64::MIN + 1, hi));
        }
        if let Some(last) = out.last_mut() {
            last.range = last.range.map(|(lo, _)| (lo, i64::MAX));
        }
        Ok(out)
    }

    /// Whether the table has a ServerID column.
    pub fn has_server_id(&self) -> bool {
        self.columns.has_server_id()
    }
}

/// What the server reports about the database and the table ([`SourceFacts`]), and its
/// `@@SERVERNAME`. Catalog views a login may not see (no VIEW ANY DATABASE) give no row: that
/// fact is then unknown, recorded as such, and must stay unknown for a watermark to be used.
async fn read_facts(conn: &ConnSpec, client: &mut SqlClient) -> Result<(SourceFacts, Option<String>)> {
    let facts_sql = format!("SELECT CAST(SERVERPROPERTY('ServerName') AS NVARCHAR(128)) AS instance, DB_NAME() AS db, @@SERVERNAME AS servername; \
        SELECT create_date FROM sys.databases WHERE database_id = DB_ID(); \
        SELECT CONVERT(NVARCHAR(36), recovery_fork_guid) AS fork FROM sys.database_recovery_status WHERE database_id = DB_ID(); \
        SELECT object_id, create_date FROM sys.objects WHERE object_id = OBJECT_ID(N'{}')", TABLE.sql_name());
    let doing = "reading what the server reports about the database (SERVERPROPERTY, sys.databases, sys.objects)";
    let sets = client
        .query(facts_sql, &[])
        .await
        .map_err(|e| conn.sql_error(doing, e))?
        .into_results()
        .await
        .map_err(|e| conn.sql_error(doing, e))?;
    let first = |i: usize| sets.get(i).and_then(|rows| rows.first());
    let text = |i: usize, c: usize| first(i).and_then(|r| r.try_get::<&str, _>(c).ok().flatten()).map(str::to_string);
    let time = |i: usize, c: usize| first(i).and_then(|r| r.try_get::<chrono::NaiveDateTime, _>(c).ok().flatten()).map(crate::source::fact_time);
    let server_name = text(0, 2);
    let instance = text(0, 0).or_else(|| server_name.clone()).unwrap_or_else(|| conn.label().to_string());
    let facts = SourceFacts {
        instance,
        database: text(0, 1).unwrap_or_else(|| conn.database().to_string()),
        database_created: time(1, 0),
        recovery_fork: text(2, 0),
        table_object_id: first(3).and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).map(i64::from),
        table_created: time(3, 1),
    };
    Ok((facts, server_name))
}

/// A column of an INFORMATION_SCHEMA.COLUMNS row whose columns from `at` are [`DECLARED`]:
/// its name, declared type and nullability.
fn declared_at(r: &tiberius::Row, at: usize) -> (String, DeclaredColumn, bool) {
    let name = r.try_get::<&str, _>(at).ok().flatten().unwrap_or("").to_string();
    let declared = DeclaredColumn {
        data_type: r.try_get::<&str, _>(at + 1).ok().flatten().unwrap_or("").to_ascii_lowercase(),
        precision: r.try_get(at + 2).ok().flatten(),
        scale: r.try_get(at + 3).ok().flatten(),
        datetime_precision: r.try_get(at + 4).ok().flatten(),
        max_chars: r.try_get(at + 6).ok().flatten(),
        collation: r.try_get::<&str, _>(at + 7).ok().flatten().map(str::to_string),
    };
    let nullable = r.try_get::<&str, _>(at + 5).ok().flatten().is_none_or(|v| v.eq_ignore_ascii_case("YES"));
    (name, declared, nullable)
}

/// The INFORMATION_SCHEMA.COLUMNS columns [`declared_at`] reads, in its order.
const DECLARED: &str = "COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH, COLLATION_NAME";

async fn discover(conn: &ConnSpec, client: &mut SqlClient) -> Result<SchemaRef> {
    let doing = format!("discovering the columns of {}", TABLE.sql_name());
    let rows = client
        .query(
            &format!("SELECT {DECLARED} FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1 AND TABLE_NAME = @P2 ORDER BY ORDINAL_POSITION"),
            &[&"dbo", &TABLE.name],
        )
        .await
        .map_err(|e| conn.sql_error(&doing, e))?
        .into_first_result()
        .await
        .map_err(|e| conn.sql_error(&doing, e))?;
    if rows.is_empty() {
        return Err(Error::Source {
            source_label: conn.label().to_string(),
            message: format!("table {} does not exist in database '{}'", TABLE.sql_name(), conn.database()),
        });
    }
    let mut fields = Vec::new();
    for r in &rows {
        let (name, declared, nullable) = declared_at(r, 0);
        // A column of a type outside the type table is kept as Null so that, if it is one of
        // ours, the type check names it; extra columns are ignored anyway.
        let t = SqlType::from_declared(&declared).map(SqlType::arrow_type).unwrap_or(DataType::Null);
        fields.push(Field::new(name.as_str(), t, nullable));
    }
    Ok(Arc::new(Schema::new(fields)))
}


/// The database's child tables: every `dbo` table but PerfSnapshotRun with a PerfSnapshotRunID
/// column, its columns from INFORMATION_SCHEMA and its identity from `sys.columns`.
async fn discover_children(conn: &ConnSpec, client: &mut SqlClient) -> Result<Children> {
    let doing = "discovering the child tables";
    let rows = client
        .query(
            &format!("SELECT TABLE_NAME, {DECLARED}, ORDINAL_POSITION FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = @P1"),
            &[&"dbo"],
        )
        .await
        .map_err(|e| conn.sql_error(doing, e))?
        .into_first_result()
        .await
        .map_err(|e| conn.sql_error(doing, e))?;
    // table -> (ordinal, name, declared type, nullable)
    let mut tables: std::collections::BTreeMap<String, Vec<(i32, String, DeclaredColumn, bool)>> = std::collections::BTreeMap::new();
    for r in &rows {
        let table: &str = r.try_get(0).ok().flatten().unwrap_or("");
        let (name, declared, nullable) = declared_at(r, 1);
        let ordinal = r.try_get::<i32, _>(9).ok().flatten().unwrap_or(0);
        tables.entry(table.to_string()).or_default().push((ordinal, name, declared, nullable));
    }
    let mut out = Children::default();
    for (table, mut cols) in tables {
        if table.eq_ignore_ascii_case(TABLE.name) || !cols.iter().any(|c| c.1.eq_ignore_ascii_case(PARENT_KEY)) {
            continue;
        }
        cols.sort_by_key(|c| c.0);
        let identity = {
            let doing = format!("reading the identity column of dbo.{table}");
            let rows = client
                .query("SELECT name, is_identity FROM sys.columns WHERE object_id = OBJECT_ID(@P1)", &[&format!("dbo.{table}")])
                .await
                .map_err(|e| conn.sql_error(&doing, e))?
                .into_first_result()
                .await
                .map_err(|e| conn.sql_error(&doing, e))?;
            rows.iter()
                .find(|r| r.try_get::<bool, _>(1).ok().flatten().unwrap_or(false))
                .and_then(|r| r.try_get::<&str, _>(0).ok().flatten().map(str::to_string))
        };
        let mut described = Vec::new();
        let mut why = None;
        for (_, name, declared, nullable) in &cols {
            match SqlType::from_declared(declared) {
                Some(t) => described.push(FoundColumn::new(name.clone(), t, *nullable).collated(declared.collation.clone())),
                None => why = Some(format!("column {name} is {}, a type perfcopy does not move", declared.sql_name())),
            }
        }
        if let Some(why) = why {
            out.unreadable.push((table, why));
            continue;
        }
        out.columns.push(cols.iter().map(|c| c.1.to_ascii_lowercase()).collect());
        out.tables.push(ChildTable::discovered(&table, described, identity.as_deref()));
    }
    Ok(out)
}

impl Source for MssqlSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn facts(&self) -> Option<&SourceFacts> {
        Some(&self.facts)
    }

    fn row_at(&self, run_id: i64) -> Result<Option<KeyRow>> {
        // The whole table, not this part's range: a watermark belongs to the whole source.
        let req = ReadRequest { projection: Projection::Keys, batch_rows: 1, after_run_id: Some(run_id.saturating_sub(1)), time_ranges: None };
        let Some(batch) = self.read_range(&req, None)?.next().transpose()? else { return Ok(None) };
        let ids = batch.column(crate::schema::key::RUN_ID).as_primitive::<arrow::datatypes::Int64Type>();
        if batch.num_rows() == 0 || ids.value(0) != run_id {
            return Ok(None);
        }
        let ts = crate::source::normalize::snapshot_ms(&batch, crate::schema::key::SNAPSHOT_UTC);
        let names = batch.column(crate::schema::key::SERVER_NAME).as_string::<i32>();
        Ok(Some(KeyRow { snapshot_ms: ts.value(0), server_name: names.value(0).to_string() }))
    }

    fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    fn database_name(&self) -> String {
        self.facts.database.clone()
    }

    fn ledger_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.server_name.iter().chain(self.newest_name.iter()).cloned().collect();
        v.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        v
    }

    fn read(&self, req: &ReadRequest) -> Result<BatchIter> {
        self.read_range(req, self.range)
    }

    fn child_tables(&self) -> &[ChildTable] {
        &self.children.tables
    }

    fn unreadable_child_tables(&self) -> &[(String, String)] {
        &self.children.unreadable
    }

    fn id_range(&self) -> Option<(i64, i64)> {
        self.range
    }

    fn child_reader(&self, tables: &[ChildTable]) -> Result<Option<Box<dyn ChildReader>>> {
        let mut queries = Vec::new();
        let mut any = false;
        for t in tables {
            let Some(i) = self.children.tables.iter().position(|c| c.name.eq_ignore_ascii_case(t.name)) else {
                queries.push(None);
                continue;
            };
            let have = &self.children.columns[i];
            let present: Vec<bool> = t.values.iter().map(|c| have.contains(&c.name.to_ascii_lowercase())).collect();
            let mut names = vec![format!("[{PARENT_KEY}]")];
            names.extend(t.values.iter().zip(&present).filter(|(_, p)| **p).map(|(c, _)| format!("[{}]", c.name.replace(']', "]]"))));
            let sql = format!(
                "SELECT {} FROM [dbo].[{}] WHERE [{PARENT_KEY}] > @P1 AND [{PARENT_KEY}] <= @P2",
                names.join(", "),
                self.children.tables[i].name.replace(']', "]]")
            );
            any = true;
            queries.push(Some(ChildQuery { table: *t, sql, present, fast: true }));
        }
        if !any {
            return Ok(None);
        }
        let empty = tables.iter().map(|t| Some(t.source_schema())).collect();
        Ok(Some(Box::new(MssqlChildReader { rt: runtime()?, client: None, conn: self.conn.clone(), queries, empty })))
    }
}

/// One child table's read: its description, the SELECT, and which of its values the
/// source's table has.
struct ChildQuery {
    table: ChildTable,
    sql: String,
    present: Vec<bool>,
    /// Decode with perfcopy's decoder (until a column type it does not read).
    fast: bool,
}

/// Child rows of a DBATools database, range by range, on one connection.
struct MssqlChildReader {
    rt: tokio::runtime::Runtime,
    client: Option<SqlClient>,
    conn: ConnSpec,
    queries: Vec<Option<ChildQuery>>,
    /// Per table, the empty batch's schema for a table this source lacks.
    empty: Vec<Option<SchemaRef>>,
}

impl ChildReader for MssqlChildReader {
    fn read(&mut self, table: usize, after: i64, upto: i64, _runs: &BatchRuns<'_>) -> Result<RecordBatch> {
        let Some(slot) = self.queries.get_mut(table) else {
            return Err(Error::Internal(format!("child table {table} unknown to this reader")));
        };
        let Some(q) = slot.as_mut() else {
            return Ok(RecordBatch::new_empty(self.empty.get(table).cloned().flatten().ok_or_else(|| Error::Internal("child schema missing".into()))?));
        };
        let full = q.table.source_schema();
        let read_schema = Arc::new(Schema::new(
            full.fields().iter().enumerate().filter(|(i, _)| *i == 0 || q.present[i - 1]).map(|(_, f)| f.as_ref().clone()).collect::<Vec<_>>(),
        ));
        let (conn, sql, fast) = (&self.conn, q.sql.clone(), &mut q.fast);
        let client = &mut self.client;
        let doing = format!("reading dbo.{} for runs {}..={upto}", q.table.name, after.saturating_add(1));
        let raw = self.rt.block_on(async {
            if client.is_none() {
                *client = Some(conn.connect().await?);
            }
            let c = client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
            let params: [&dyn tiberius::ToSql; 2] = [&after, &upto];
            let mut cols = Builders::new(&read_schema, 1024)?;
            let bad_value = |m: String| Error::BadValue { source_label: conn.label().to_string(), column: q.table.name.into(), message: m };
            let mut done = false;
            if *fast {
                match fill_raw(c, &sql, &params, &mut cols).await {
                    Ok(()) => done = true,
                    Err(RawError::Decode(DecodeError::Unsupported(why))) => {
                        tracing::debug!("{}: reading with tiberius' row decoder: {why}", conn.label());
                        *fast = false;
                        cols = Builders::new(&read_schema, 1024)?;
                    }
                    Err(RawError::Decode(DecodeError::Server(t))) => return Err(conn.sql_error(&doing, tiberius::error::Error::Server(t))),
                    Err(RawError::Decode(DecodeError::Value(m))) => return Err(bad_value(m)),
                    Err(RawError::Decode(e)) => return Err(conn.error(format!("{doing}: {e}"))),
                    Err(RawError::Tds(e)) => return Err(conn.sql_error(&doing, e)),
                }
            }
            if !done {
                let stream = c.query(sql.as_str(), &params).await.map_err(|e| conn.sql_error(&doing, e))?;
                let mut rows = stream.into_row_stream();
                while let Some(row) = rows.try_next().await.map_err(|e| conn.sql_error(&doing, e))? {
                    cols.push_row(&row).map_err(bad_value)?;
                }
            }
            cols.finish(&read_schema)
        });
        let raw = match raw {
            Ok(b) => b,
            Err(e) => {
                self.client = None;
                return Err(e);
            }
        };
        // Columns the source's table lacks are NULL (their description allows it: checked
        // when the copy matched the tables).
        let mut arrays = Vec::with_capacity(full.fields().len());
        let mut next = 0;
        for (i, f) in full.fields().iter().enumerate() {
            if i == 0 || q.present[i - 1] {
                arrays.push(raw.column(next).clone());
                next += 1;
            } else {
                arrays.push(arrow::array::new_null_array(f.data_type(), raw.num_rows()));
            }
        }
        RecordBatch::try_new(full, arrays).map_err(|e| Error::Internal(format!("child rows of dbo.{}: {e}", q.table.name)))
    }
}

impl MssqlSource {
    /// Reads rows of the ID range `range` (inclusive; `None`: the whole table).
    fn read_range(&self, req: &ReadRequest, range: Option<(i64, i64)>) -> Result<BatchIter> {
        // Columns to select, in the source's own names (validated identifiers from
        // INFORMATION_SCHEMA, bracket-quoted).
        let wanted: Vec<usize> = projection_columns(req.projection)
            .iter()
            .filter(|&&c| self.columns.source_name(&self.schema, c).is_some())
            .copied()
            .collect();
        let names: Vec<String> = wanted
            .iter()
            .filter_map(|&c| self.columns.source_name(&self.schema, c))
            .map(|n| format!("[{}]", n.replace(']', "]]")))
            .collect();
        let fields: Vec<Field> = wanted
            .iter()
            .filter_map(|&c| {
                let n = self.columns.source_name(&self.schema, c)?;
                self.schema.field_with_name(n).ok().cloned()
            })
            .collect();
        let page_schema = Arc::new(Schema::new(fields));
        let run_col = names.iter().position(|n| n.eq_ignore_ascii_case(&format!("[{}]", TABLE.identity))).unwrap_or(0);
        let upper = range.map(|(_, hi)| hi);
        let start = match (req.after_run_id, range) {
            (Some(a), Some((lo, _))) => a.max(lo - 1),
            (Some(a), None) => a,
            (None, Some((lo, _))) => lo - 1,
            (None, None) => i64::MIN,
        };
        let sql = format!(
            "SELECT TOP (@P1) {} FROM {} WHERE {id} > @P2{} ORDER BY {id}",
            names.join(", "),
            TABLE.sql_name(),
            if upper.is_some() { format!(" AND {} <= @P3", TABLE.identity) } else { String::new() },
            id = TABLE.identity,
        );
        Ok(Box::new(PageReader {
            rt: Some(runtime()?),
            client: None,
            conn: self.conn.clone(),
            sql,
            page_rows: req.batch_rows.max(1),
            last: start,
            upper,
            done: false,
            page_schema,
            run_col,
            columns: self.columns.clone(),
            projection: req.projection,
            fast: self.fast.clone(),
            builders: None,
        }))
    }
}

/// Keyset-paged reader: each `next()` fetches one page as one batch.
struct PageReader {
    rt: Option<tokio::runtime::Runtime>,
    client: Option<SqlClient>,
    conn: ConnSpec,
    sql: String,
    page_rows: usize,
    last: i64,
    upper: Option<i64>,
    done: bool,
    page_schema: SchemaRef,
    run_col: usize,
    columns: ColumnMatch,
    projection: Projection,
    /// Decode replies with perfcopy's TDS decoder (until a result it does not read).
    fast: Arc<std::sync::atomic::AtomicBool>,
    builders: Option<Builders>,
}

/// How a page read with perfcopy's decoder failed.
enum RawError {
    Tds(tiberius::error::Error),
    Decode(DecodeError),
}

impl From<tiberius::error::Error> for RawError {
    fn from(e: tiberius::error::Error) -> Self {
        RawError::Tds(e)
    }
}

impl From<DecodeError> for RawError {
    fn from(e: DecodeError) -> Self {
        RawError::Decode(e)
    }
}

/// Runs `sql` and decodes its reply straight from the packet bytes into `cols`.
async fn fill_raw(client: &mut SqlClient, sql: &str, params: &[&dyn tiberius::ToSql], cols: &mut Builders) -> std::result::Result<(), RawError> {
    let mut reply = client.query_raw(sql, params).await?;
    let mut decoder = ReplyDecoder::new();
    while let Some(packet) = reply.next_payload().await? {
        match decoder.packet(&packet, cols) {
            Err(e @ DecodeError::Unsupported(_)) => {
                // Read the rest of the reply here, so the connection is clean for tiberius.
                while reply.next_payload().await?.is_some() {}
                return Err(e.into());
            }
            other => other?,
        }
    }
    decoder.finish()?;
    Ok(())
}

impl PageReader {
    async fn page(&mut self) -> Result<Option<RecordBatch>> {
        if self.client.is_none() {
            self.client = Some(self.conn.connect().await?);
        }
        let client = self.client.as_mut().ok_or_else(|| Error::Internal("no connection".into()))?;
        let n = self.page_rows as i64;
        let mut params: Vec<&dyn tiberius::ToSql> = vec![&n, &self.last];
        if let Some(u) = &self.upper {
            params.push(u);
        }
        let conn = &self.conn;
        // Every error names the page, so a failed read says where the copy stopped.
        let doing = match self.last {
            i64::MIN => format!("reading {}, first page (TOP {n})", TABLE.sql_name()),
            last => format!("reading {}, page after {} {last} (TOP {n})", TABLE.sql_name(), TABLE.identity),
        };
        let doing = doing.as_str();
        let bad_value = |m: String| Error::BadValue { source_label: conn.label().to_string(), column: TABLE.name.into(), message: m };
        // One set of builders for the whole read (each finish leaves them sized for the next
        // page); new ones if a failed page left rows behind.
        let mut cols = match self.builders.take() {
            Some(b) if b.is_empty() => b,
            _ => Builders::new(&self.page_schema, self.page_rows)?,
        };
        let mut fast_done = false;
        if self.fast.load(std::sync::atomic::Ordering::Relaxed) {
            match fill_raw(client, self.sql.as_str(), &params, &mut cols).await {
                Ok(()) => fast_done = true,
                Err(RawError::Decode(DecodeError::Unsupported(why))) => {
                    tracing::debug!("{}: reading with tiberius' row decoder: {why}", conn.label());
                    self.fast.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(RawError::Decode(DecodeError::Server(t))) => return Err(conn.sql_error(doing, tiberius::error::Error::Server(t))),
                Err(RawError::Decode(DecodeError::Value(m))) => return Err(bad_value(m)),
                // A reply the server did not finish (or that breaks the protocol) is never a
                // short page: a short page would end the read and lose the rest of the table.
                Err(RawError::Decode(e @ (DecodeError::Protocol(_) | DecodeError::Incomplete(_)))) => return Err(conn.error(format!("{doing}: {e}"))),
                Err(RawError::Tds(e)) => return Err(conn.sql_error(doing, e)),
            }
        }
        if !fast_done {
            let stream = client.query(self.sql.as_str(), &params).await.map_err(|e| conn.sql_error(doing, e))?;
            let mut rows = stream.into_row_stream();
            while let Some(row) = rows.try_next().await.map_err(|e| conn.sql_error(doing, e))? {
                cols.push_row(&row).map_err(bad_value)?;
            }
        }
        let got = cols.len();
        if got < self.page_rows {
            self.done = true;
        }
        if got == 0 {
            return Ok(None);
        }
        let raw = cols.finish(&self.page_schema)?;
        self.builders = Some(cols);
        let ids = raw.column(self.run_col).as_primitive::<arrow::datatypes::Int64Type>().clone();
        // Pages come in PerfSnapshotRunID order: the last row is the next page's key.
        self.last = ids.value(got - 1);
        self.columns
            .normalize(&raw, self.projection, &|r| format!("{} {}", TABLE.identity, ids.value(r)))
            .map(Some)
    }
}

impl Iterator for PageReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // The runtime is taken out for the duration of the call so `page` can borrow self.
        let rt = self.rt.take()?;
        let r = rt.block_on(self.page());
        self.rt = Some(rt);
        match r {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
