//! Sources: where `PerfSnapshotRun` rows come from. Each kind (a DBATools database over TDS, a Parquet export,
//! synthetic rows) implements [`Source`] and yields Arrow batches in the canonical
//! schemas of [`crate::schema`]; the pipeline knows nothing else about them.

pub mod mssql;
pub mod normalize;
pub mod parquet;
pub mod parquet_children;
pub mod stage_children;
pub mod synthetic;
pub mod synthetic_children;
pub mod synthetic_text;

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::ChildTable;

/// Which columns a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// [`crate::schema::key_schema`]: PerfSnapshotRunID, SnapshotUTC, ServerName.
    Keys,
    /// [`crate::schema::source_schema`]: all columns.
    Full,
}

/// What the pipeline asks of a source for one pass.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub projection: Projection,
    /// Rows per batch (a source may return fewer).
    pub batch_rows: usize,
    /// Hint: only rows with `PerfSnapshotRunID > after_run_id` are wanted. A source may use it
    /// to skip data; the pipeline filters exactly anyway.
    pub after_run_id: Option<i64>,
    /// Hint: only rows whose SnapshotUTC (ms) falls in one of these half-open ranges are wanted.
    pub time_ranges: Option<Vec<(i64, i64)>>,
}

/// An iterator of batches; errors end the stream.
pub type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// What a SQL Server reports about the database and table a source reads: which instance
/// and database it is, and which incarnation of them (a restored database gets a new creation
/// time and recovery fork; a table created again a new object ID and creation time). A
/// watermark recorded under other facts is never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFacts {
    /// `SERVERPROPERTY('ServerName')`: the instance as the host names it now (`@@SERVERNAME`
    /// keeps an old name after a rename or a clone, so it is not used).
    pub instance: String,
    /// `DB_NAME()`.
    pub database: String,
    /// `sys.databases.create_date` (ISO 8601, ms): set again by a restore.
    pub database_created: Option<String>,
    /// `sys.database_recovery_status.recovery_fork_guid`: a new fork after a restore.
    pub recovery_fork: Option<String>,
    /// `OBJECT_ID(N'dbo.PerfSnapshotRun')`.
    pub table_object_id: Option<i64>,
    /// `sys.objects.create_date` of the table (ISO 8601, ms).
    pub table_created: Option<String>,
}

impl SourceFacts {
    /// Why a watermark recorded under `recorded` does not belong to the source as it is now
    /// (`None`: same instance, database and incarnations).
    pub fn change_since(&self, recorded: &SourceFacts) -> Option<String> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        if self.instance != recorded.instance || self.database != recorded.database {
            return Some(format!(
                "the watermark was recorded for {}/{}, this source is {}/{}",
                recorded.instance, recorded.database, self.instance, self.database
            ));
        }
        if self.database_created != recorded.database_created || self.recovery_fork != recorded.recovery_fork {
            return Some(format!(
                "database {} was restored or created again since (created {}, recovery fork {}; the watermark's: created {}, fork {})",
                self.database,
                opt(&self.database_created),
                opt(&self.recovery_fork),
                opt(&recorded.database_created),
                opt(&recorded.recovery_fork)
            ));
        }
        if self.table_object_id != recorded.table_object_id || self.table_created != recorded.table_created {
            let obj = |id: Option<i64>, at: &Option<String>| format!("object {} created {}", id.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into()), opt(at));
            return Some(format!(
                "dbo.PerfSnapshotRun was created again since ({}; the watermark's: {})",
                obj(self.table_object_id, &self.table_created),
                obj(recorded.table_object_id, &recorded.table_created)
            ));
        }
        None
    }
}

/// A creation time as [`SourceFacts`] records it (ISO 8601, milliseconds).
pub fn fact_time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

/// The key columns of one source row: what a watermark points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub snapshot_ms: i64,
    pub server_name: String,
}

/// Reads a source's child rows by run: [`ChildReader::read`] returns the rows of one table
/// whose PerfSnapshotRunID lies in a range, in [`ChildTable::source_schema`] (PerfSnapshotRunID,
/// then the values in the description's order; a nullable column the source's table lacks is
/// NULL).
pub trait ChildReader: Send {
    /// Rows of table `table` (its index in the tables the reader was made for) with
    /// `after < PerfSnapshotRunID <= upto`, in any order; `runs` are the runs of the batch
    /// the range ends with (a source whose child rows carry their run's key instead of its ID,
    /// a stage, uses them). Empty when this source lacks the table.
    fn read(&mut self, table: usize, after: i64, upto: i64, runs: &BatchRuns<'_>) -> Result<RecordBatch>;
}

/// The runs of one source batch: PerfSnapshotRunID and SnapshotUTC (ms) per row.
#[derive(Debug, Clone, Copy)]
pub struct BatchRuns<'a> {
    pub ids: &'a [i64],
    pub snapshot_ms: &'a [i64],
}

/// A source of DBATools `PerfSnapshotRun` rows.
pub trait Source: Send + Sync {
    /// How the user knows this source (a path, or server/database); never contains a secret.
    fn label(&self) -> &str;
    /// The source's identity for watermarks: a file's canonical path; for SQL Server the
    /// instance, database and table as the server reports them ([`SourceFacts`]), never the
    /// connection string or the rows' ServerName.
    fn identity(&self) -> &str;
    /// Which `--from` the source came from: parts of one source split across connections share
    /// it (their watermark is recorded once, at commit). Distinct `--from`s never share it,
    /// even when they report one identity (an unrenamed clone).
    fn group(&self) -> &str {
        self.identity()
    }
    /// What the source's server reports about it; `None` for files.
    fn facts(&self) -> Option<&SourceFacts> {
        None
    }
    /// The key columns of the row with this PerfSnapshotRunID, if the source has it now.
    fn row_at(&self, run_id: i64) -> Result<Option<KeyRow>> {
        let req = ReadRequest { projection: Projection::Keys, batch_rows: crate::defaults::INTERNAL_BATCH_ROWS, after_run_id: Some(run_id.saturating_sub(1)), time_ranges: None };
        for batch in self.read(&req)? {
            let batch = batch?;
            let ids = batch.column(crate::schema::key::RUN_ID).as_primitive::<Int64Type>();
            if let Some(r) = ids.values().iter().position(|&id| id == run_id) {
                let ts = crate::source::normalize::snapshot_ms(&batch, crate::schema::key::SNAPSHOT_UTC);
                let names = batch.column(crate::schema::key::SERVER_NAME).as_string::<i32>();
                return Ok(Some(KeyRow { snapshot_ms: ts.value(r), server_name: names.value(r).to_string() }));
            }
        }
        Ok(None)
    }
    /// Streams rows, in the source's natural order (PerfSnapshotRunID order where it has one).
    fn read(&self, request: &ReadRequest) -> Result<BatchIter>;
    /// The monitored server this source belongs to (`@@SERVERNAME`), when the source knows.
    fn server_name(&self) -> Option<&str> {
        None
    }
    /// Names this source's own server may be registered under, most likely first: its
    /// `@@SERVERNAME`, then the ServerName of its newest row. Sync ledgers use the first one
    /// the target knows. Empty for sources that keep no ledger (files).
    fn ledger_names(&self) -> Vec<String> {
        self.server_name().map(|n| vec![n.to_string()]).unwrap_or_default()
    }
    /// The child tables this source has ([`ChildTable`]: tables with a PerfSnapshotRunID
    /// column besides PerfSnapshotRun), discovered from its catalog. Empty for sources
    /// without child tables (Parquet exports of PerfSnapshotRun, generated rows).
    fn child_tables(&self) -> &[ChildTable] {
        &[]
    }
    /// Child tables this source has but cannot read, with the reason (a column of a type
    /// outside the type table): copying one of them is an error that gives the reason.
    fn unreadable_child_tables(&self) -> &[(String, String)] {
        &[]
    }
    /// The PerfSnapshotRunID range this source reads (inclusive), when it is one part of a
    /// source split across connections; `None`: every ID.
    fn id_range(&self) -> Option<(i64, i64)> {
        None
    }
    /// A reader of the child rows of `tables` (the copy's descriptions, matched to this
    /// source's tables by name), with its own connection. `None` when the source has none of
    /// them.
    fn child_reader(&self, _tables: &[ChildTable]) -> Result<Option<Box<dyn ChildReader>>> {
        Ok(None)
    }
    /// The DBATools database name for sync ledgers (a file source: its file name).
    fn database_name(&self) -> String {
        std::path::Path::new(self.label())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.label().to_string())
    }
}

/// A `--from` argument as the user gave it, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A Parquet file, or a directory whose `*.parquet` files are each one source.
    Path(PathBuf),
    /// A SQL Server connection string (ADO.NET or JDBC style).
    Connection(String),
}

/// A validated source argument.
#[derive(Debug, Clone)]
pub enum SourceInput {
    Path(PathBuf),
    Sql(crate::mssql::ConnSpec),
}

impl SourceSpec {
    /// Classifies a `--from` argument: connection strings are recognised by their keys, anything
    /// else is a path.
    pub fn parse(arg: &str) -> SourceSpec {
        let lower = arg.trim_start().to_ascii_lowercase();
        let looks_like_conn = lower.starts_with("jdbc:sqlserver:")
            || (arg.contains('=')
                && ["server=", "data source=", "address=", "addr=", "network address="]
                    .iter()
                    .any(|k| lower.contains(k)));
        if looks_like_conn {
            SourceSpec::Connection(arg.to_string())
        } else {
            SourceSpec::Path(PathBuf::from(arg))
        }
    }
}

/// Opens every source: path specs expand into one source per Parquet file (directories: their
/// `*.parquet` files in name order); a SQL Server source may be split into `split` ID ranges
/// read on separate connections. The result's order is the sources' rank for deduplication.
pub fn open_sources(specs: &[SourceInput], split: usize) -> Result<Vec<Box<dyn Source>>> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // "Given twice" means the same file or the same connection (host, port, database): two
    // connections that report one identity may be two instances (a clone) and are both read.
    let mut once = |src: &dyn Source| {
        let fresh = seen.insert(src.group().to_string());
        if !fresh {
            tracing::warn!("source '{}' was given more than once; reading it once", src.label());
        }
        fresh
    };
    for spec in specs {
        match spec {
            SourceInput::Path(p) => {
                for file in expand_path(p)? {
                    let src = parquet::ParquetSource::open(&file)?;
                    if once(&src) {
                        out.push(Box::new(src));
                    }
                }
            }
            SourceInput::Sql(conn) => {
                let src = mssql::MssqlSource::open(conn.clone())?;
                if once(&src) {
                    for part in src.split(split)? {
                        out.push(Box::new(part));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Data files of a perfcopy stage (`DIR/PerfSnapshotRun/ServerID=<id>/*.parquet`), when `p`
/// is a stage directory or its table's folder; hidden and temporary files excluded.
fn stage_files(p: &Path) -> Result<Option<Vec<PathBuf>>> {
    let table = if p.join(crate::schema::TABLE_DIR).is_dir() { p.join(crate::schema::TABLE_DIR) } else { p.to_path_buf() };
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(&table).map_err(Error::io(&table))? {
        let path = entry.map_err(Error::io(&table))?.path();
        if path.is_dir() && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| crate::schema::RUN.is_partition_dir(n)) {
            parts.push(path);
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for dir in parts {
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = entry.map_err(Error::io(&dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_') && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(Some(files))
}

/// Files of a `--from` path: a file itself, a stage's data files, or a directory's `*.parquet`
/// files (not its subfolders: an export's child tables, `NAME/` beside `NAME.parquet`, come
/// with their export and are no run sources; naming such a folder or file is an error).
fn expand_path(p: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(p).map_err(Error::io(p))?;
    if let Some(export) = parquet_children::export_of_child_path(p) {
        return Err(Error::Source {
            source_label: p.display().to_string(),
            message: format!("holds child tables of the export '{}', not PerfSnapshotRun rows; give that file (its child tables come with it)", export.display()),
        });
    }
    if !meta.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    if let Some(files) = stage_files(p)? {
        return Ok(files);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(p).map_err(Error::io(p))? {
        let path = entry.map_err(Error::io(p))?.path();
        let is_parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        if is_parquet && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        tracing::warn!("directory '{}' holds no *.parquet files", p.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_from_arguments() {
        assert_eq!(
            SourceSpec::parse("data/srv1.parquet"),
            SourceSpec::Path("data/srv1.parquet".into())
        );
        assert!(matches!(
            SourceSpec::parse("Server=tcp:sql01,1433;Database=DBATools;User Id=x;Password=y"),
            SourceSpec::Connection(_)
        ));
        assert!(matches!(
            SourceSpec::parse("jdbc:sqlserver://sql01:1433;databaseName=DBATools"),
            SourceSpec::Connection(_)
        ));
        // A file name with '=' (Hive-style directories) is still a path.
        assert!(matches!(SourceSpec::parse("out/ServerID=3"), SourceSpec::Path(_)));
    }
}
