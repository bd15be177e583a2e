//! Child tables of a Parquet export on the test server: an export `NAME.parquet`'s child
//! tables are `NAME/<Table>.parquet` (or `NAME/<Table>/*.parquet`) in source form
//! (PerfSnapshotRunID, then the columns; a `<Table>ID` column is ignored), each field's SQL type
//! in its metadata `perfcopy.sql_type` (else taken from the Arrow type; text is NVARCHAR(MAX)).
//! [`seed_export_children`] creates `<db>.dbo.<Table>` for each (a BIGINT IDENTITY `<Table>ID`
//! primary key, PerfSnapshotRunID BIGINT NOT NULL, then the columns) and inserts the rows;
//! [`create_child_tables`] creates the same tables empty (a MonitoringDB's).

use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, Schema, TimeUnit};

use crate::error::{ServerError, Result};
use crate::{Column, SqlType, TestServer};

/// The field metadata key holding a column's SQL type (perfcopy's `SQL_TYPE_KEY`).
pub const SQL_TYPE_KEY: &str = "perfcopy.sql_type";

/// A SQL type as perfcopy writes its name (`BIGINT`, `DECIMAL(18,2)`, `NVARCHAR(MAX)`,
/// `DATETIME2(3)`, …); `None` for a type the test server does not store.
pub fn sql_type_from_name(name: &str) -> Option<SqlType> {
    let n = name.trim().to_ascii_lowercase();
    let (base, args) = match n.split_once('(') {
        Some((b, rest)) => (b.trim().to_string(), Some(rest.strip_suffix(')')?.to_string())),
        None => (n.clone(), None),
    };
    let len = |a: &Option<String>| -> Option<Option<u16>> {
        match a.as_deref().map(str::trim) {
            Some("max") => Some(None),
            Some(l) => l.parse().ok().map(Some),
            None => Some(Some(1)),
        }
    };
    Some(match base.as_str() {
        "bigint" => SqlType::BigInt,
        "int" => SqlType::Int,
        "smallint" => SqlType::SmallInt,
        "tinyint" => SqlType::TinyInt,
        "bit" => SqlType::Bit,
        "decimal" | "numeric" => {
            let a = args?;
            let (p, s) = a.split_once(',')?;
            let (precision, scale) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
            if base == "numeric" { SqlType::Numeric { precision, scale } } else { SqlType::Decimal { precision, scale } }
        }
        "datetime2" => SqlType::DateTime2(args.as_deref().map_or(Some(7), |a| a.trim().parse().ok())?),
        "datetime" => SqlType::DateTime,
        "nvarchar" | "nchar" => SqlType::NVarChar(len(&args)?),
        "sysname" => SqlType::NVarChar(Some(128)),
        "varchar" | "char" => SqlType::varchar(len(&args)?),
        "binary" => SqlType::Binary(len(&args)??),
        "varbinary" => SqlType::VarBinary(len(&args)?),
        "xml" => SqlType::Xml,
        "float" => SqlType::Float,
        "sql_variant" => SqlType::SqlVariant,
        "uniqueidentifier" => SqlType::UniqueIdentifier,
        _ => return None,
    })
}

/// The SQL type of an Arrow field without metadata.
fn sql_type_of_arrow(t: &DataType) -> Option<SqlType> {
    Some(match t {
        DataType::Int64 => SqlType::BigInt,
        DataType::Int32 => SqlType::Int,
        DataType::Int16 => SqlType::SmallInt,
        DataType::UInt8 => SqlType::TinyInt,
        DataType::Boolean => SqlType::Bit,
        DataType::Decimal128(p, s) => SqlType::Decimal { precision: *p, scale: (*s).max(0) as u8 },
        DataType::Timestamp(TimeUnit::Millisecond, None) => SqlType::DateTime2(3),
        DataType::Timestamp(TimeUnit::Microsecond, None) => SqlType::DateTime2(6),
        DataType::Utf8 | DataType::LargeUtf8 => SqlType::NVarChar(None),
        DataType::Binary | DataType::LargeBinary => SqlType::VarBinary(None),
        DataType::FixedSizeBinary(n) => SqlType::Binary(u16::try_from(*n).ok()?),
        DataType::Float64 => SqlType::Float,
        _ => return None,
    })
}

/// The child tables of export `run_file`: (table name, its data files), by name.
pub fn export_child_files(run_file: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let Some(stem) = run_file.file_stem() else { return Ok(Vec::new()) };
    let dir = run_file.with_file_name(stem);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let io = |e: std::io::Error| ServerError::Api(format!("cannot read {}: {e}", dir.display()));
    let data = |p: &Path| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        n.ends_with(".parquet") && !n.starts_with('.') && !n.starts_with('_') && p.is_file()
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|f| data(f)).collect();
            files.sort();
            if !files.is_empty() {
                out.push((name, files));
            }
        } else if data(&p) {
            if let Some(t) = name.strip_suffix(".parquet") {
                out.push((t.to_string(), vec![p]));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The columns of child table `table` as a DBATools database declares it, from a file's
/// schema: `<Table>ID` BIGINT IDENTITY, PerfSnapshotRunID BIGINT NOT NULL, then the values.
pub fn child_columns(table: &str, schema: &Schema) -> Result<Vec<Column>> {
    let id = format!("{table}ID");
    let mut cols = vec![Column::new(&id, SqlType::BigInt, false).identity(), Column::new("PerfSnapshotRunID", SqlType::BigInt, false)];
    for f in schema.fields() {
        if f.name().eq_ignore_ascii_case("PerfSnapshotRunID") || f.name().eq_ignore_ascii_case(&id) {
            continue;
        }
        let ty = match f.metadata().get(SQL_TYPE_KEY) {
            Some(t) => sql_type_from_name(t).ok_or_else(|| ServerError::Api(format!("{table}.{}: SQL type {t} is not one the test server stores", f.name())))?,
            None => sql_type_of_arrow(f.data_type()).ok_or_else(|| ServerError::Api(format!("{table}.{}: Arrow type {} has no SQL type", f.name(), f.data_type())))?,
        };
        cols.push(Column::new(f.name(), ty, f.is_nullable()));
    }
    Ok(cols)
}

fn file_schema(path: &Path) -> Result<std::sync::Arc<Schema>> {
    let file = std::fs::File::open(path).map_err(|e| ServerError::Api(format!("cannot open {}: {e}", path.display())))?;
    Ok(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.schema().clone())
}

/// Creates `db.dbo.<Table>` for each child table of export `run_file`, empty; returns their
/// names.
pub fn create_child_tables(srv: &TestServer, db: &str, run_file: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (table, files) in export_child_files(run_file)? {
        let cols = child_columns(&table, file_schema(&files[0])?.as_ref())?;
        let id = format!("{table}ID");
        srv.create_table(db, &format!("dbo.{table}"), cols, &[&[id.as_str()]])?;
        names.push(table);
    }
    Ok(names)
}

/// [`create_child_tables`], then every file's rows inserted (identity values assigned);
/// returns (table, rows) per table.
pub fn seed_export_children(srv: &TestServer, db: &str, run_file: &Path) -> Result<Vec<(String, u64)>> {
    create_child_tables(srv, db, run_file)?;
    let mut out = Vec::new();
    for (table, files) in export_child_files(run_file)? {
        let id = format!("{table}ID");
        let mut n = 0;
        for f in files {
            let file = std::fs::File::open(&f).map_err(|e| ServerError::Api(format!("cannot open {}: {e}", f.display())))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
            for b in reader {
                let b = b?;
                // The source's own identity values are not kept (the table numbers its rows).
                let keep: Vec<usize> = (0..b.num_columns()).filter(|&i| !b.schema().field(i).name().eq_ignore_ascii_case(&id)).collect();
                let b = b.project(&keep)?;
                n += srv.insert_batch(db, &format!("dbo.{table}"), &b)?;
            }
        }
        out.push((table, n));
    }
    Ok(out)
}
