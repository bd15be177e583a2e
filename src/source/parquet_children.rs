//! The child tables of a Parquet export, read as a source (issue 14).
//!
//! ## Layout
//! An export `NAME.parquet` holds one DBATools database's `PerfSnapshotRun`. Its child tables,
//! if exported, lie in the folder `NAME/` beside it: `NAME/<Table>.parquet`, or several files
//! `NAME/<Table>/*.parquet` (name order; hidden `.…` and `_…` files ignored). Each file is in
//! source form: `PerfSnapshotRunID` (BIGINT, the run's ID in `NAME.parquet`) and the table's
//! columns; a `<Table>ID` identity column, if present, is ignored (it is source-local).
//! `perfcopy generate` writes this layout; so does any tool that exports the tables with
//! their IDs (e.g. one `SELECT *` per table).
//!
//! A column's SQL type comes from its field metadata `perfcopy.sql_type` (what perfcopy and
//! `generate` write, e.g. `NVARCHAR(120)`, checked against the Arrow type) when present, else
//! from the Arrow type: Int64 BIGINT, Int32 INT, Int16 SMALLINT, UInt8 TINYINT, Boolean BIT,
//! Decimal128(p,s) DECIMAL(p,s), Timestamp(ms, no zone) DATETIME2(3), Timestamp(µs) DATETIME2(6),
//! Utf8 NVARCHAR(MAX), FixedSizeBinary(n) BINARY(n). Without metadata a text column is
//! NVARCHAR(MAX), so a MonitoringDB target needs an NVARCHAR(MAX) column for it (its check
//! refuses a shorter one); write the metadata to load into shorter columns. Any other
//! column type makes the table unreadable (copying it is an error naming file and column).
//!
//! ## Reads
//! Runs come in PerfSnapshotRunID ranges that follow each other. Row groups are chosen by
//! their PerfSnapshotRunID statistics; a decoded row group is kept while later ranges still
//! need it (up to [`CACHE_ROWS`] rows in all) and dropped once a range has passed it. Child
//! rows need not be sorted, but an unsorted file's row groups each span many runs: each is
//! then needed by every range, the cache fills and the groups beyond it are decoded again
//! for every batch of runs (CPU, not memory: memory stays bounded by the cache and one group).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema, TimeUnit};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::schema::{ChildTable, SqlType, PARENT_KEY, SQL_TYPE_KEY};
use crate::source::stage_children::Group;
use crate::source::{BatchRuns, ChildReader};

/// Decoded child rows kept across ranges, in all tables of one reader.
pub const CACHE_ROWS: usize = 1 << 20;

/// The child tables of one export.
#[derive(Debug, Default)]
pub struct ExportChildren {
    pub tables: Vec<ChildTable>,
    pub unreadable: Vec<(String, String)>,
    /// Each readable table's files, in `tables`' order.
    files: Vec<Vec<PathBuf>>,
}

/// The folder of `run_file`'s child tables: `NAME/` beside `NAME.parquet`.
pub fn folder_of(run_file: &Path) -> Option<PathBuf> {
    let stem = run_file.file_stem()?;
    Some(run_file.with_file_name(stem))
}

/// Whether `name` is a data file name (`*.parquet`, not hidden or temporary).
fn is_data_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_') && p.is_file()
}

/// The child tables of the export `run_file`, if it has a child folder.
pub fn of_export(run_file: &Path) -> Result<Option<ExportChildren>> {
    let Some(dir) = folder_of(run_file).filter(|d| d.is_dir()) else { return Ok(None) };
    let mut found: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
        let p = e.map_err(Error::io(&dir))?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            let mut files = Vec::new();
            for f in std::fs::read_dir(&p).map_err(Error::io(&p))? {
                let f = f.map_err(Error::io(&p))?.path();
                if is_data_file(&f) {
                    files.push(f);
                }
            }
            files.sort();
            if !files.is_empty() {
                found.push((name, files));
            }
        } else if is_data_file(&p) {
            if let Some(table) = name.strip_suffix(".parquet") {
                found.push((table.to_string(), vec![p]));
            }
        }
    }
    found.sort();
    let mut out = ExportChildren::default();
    for (name, files) in found {
        if out.tables.iter().any(|t| t.name.eq_ignore_ascii_case(&name)) || out.unreadable.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            out.unreadable.push((name.clone(), format!("{}: both {name}.parquet and a folder {name}/ exist", dir.display())));
            continue;
        }
        let first = &files[0];
        let schema = open(first)?.schema().clone();
        match describe(&name, &schema) {
            Ok(t) => {
                out.tables.push(t);
                out.files.push(files);
            }
            Err(why) => out.unreadable.push((name, format!("{}: {why}", first.display()))),
        }
    }
    Ok(Some(out))
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(Error::io(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::NotParquet { path: path.to_path_buf(), message: e.to_string() })
}

/// The SQL type of an exported child column: its metadata's, or its Arrow type's.
fn sql_type_of(f: &arrow::datatypes::Field) -> std::result::Result<SqlType, String> {
    if let Some(t) = f.metadata().get(SQL_TYPE_KEY) {
        return SqlType::from_sql_name(t)
            .filter(|s| &s.arrow_type() == f.data_type())
            .ok_or_else(|| format!("column {} declares {SQL_TYPE_KEY} {t}, which does not match its Arrow type {}", f.name(), f.data_type()));
    }
    Ok(match f.data_type() {
        DataType::Int64 => SqlType::BigInt,
        DataType::Int32 => SqlType::Int,
        DataType::Int16 => SqlType::SmallInt,
        DataType::UInt8 => SqlType::TinyInt,
        DataType::Boolean => SqlType::Bit,
        DataType::Decimal128(p, s) => SqlType::Decimal { precision: *p, scale: *s },
        DataType::Timestamp(TimeUnit::Millisecond, None) => SqlType::DateTime2(3),
        DataType::Timestamp(TimeUnit::Microsecond, None) => SqlType::DateTime2(6),
        DataType::Utf8 => SqlType::NVarCharMax,
        DataType::FixedSizeBinary(n) if (1..=8000).contains(n) => SqlType::Binary(*n as u16),
        other => return Err(format!("column {} has Arrow type {other}, which has no SQL type without {SQL_TYPE_KEY} metadata", f.name())),
    })
}

/// A child table's description from an exported file's schema: PerfSnapshotRunID (BIGINT),
/// then the values; `<Table>ID` ignored.
pub fn describe(name: &str, schema: &Schema) -> std::result::Result<ChildTable, String> {
    let parent = schema
        .fields()
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(PARENT_KEY))
        .ok_or_else(|| format!("it has no {PARENT_KEY} column"))?;
    if parent.data_type() != &DataType::Int64 {
        return Err(format!("its {PARENT_KEY} is {}, not BIGINT (Int64)", parent.data_type()));
    }
    let identity = format!("{name}ID");
    let mut cols = Vec::new();
    for f in schema.fields() {
        if f.name().eq_ignore_ascii_case(PARENT_KEY) || f.name().eq_ignore_ascii_case(&identity) {
            continue;
        }
        cols.push((f.name().clone(), sql_type_of(f)?, f.is_nullable()));
    }
    let has_identity = schema.fields().iter().any(|f| f.name().eq_ignore_ascii_case(&identity));
    Ok(ChildTable::discovered(name, cols, has_identity.then_some(identity.as_str())))
}


struct Part {
    /// The copy's description of the table (the output's columns).
    table: ChildTable,
    groups: Vec<Group>,
}

/// Child rows of an export, by PerfSnapshotRunID range.
pub struct ExportChildReader {
    tables: Vec<Option<Part>>,
    empty: Vec<ChildTable>,
    cached: usize,
}

impl ExportChildReader {
    /// A reader of `tables` (the copy's descriptions, matched by name) of `export`.
    pub fn new(export: &ExportChildren, tables: &[ChildTable]) -> Result<ExportChildReader> {
        let mut parts = Vec::with_capacity(tables.len());
        for t in tables {
            let Some(k) = export.tables.iter().position(|e| e.name.eq_ignore_ascii_case(t.name)) else {
                parts.push(None);
                continue;
            };
            let mut groups = Vec::new();
            for f in &export.files[k] {
                let b = open(f)?;
                let here = describe(t.name, b.schema()).map_err(|m| Error::Source { source_label: f.display().to_string(), message: m })?;
                for c in t.values {
                    match here.values.iter().find(|h| h.name.eq_ignore_ascii_case(c.name)) {
                        Some(h) if h.sql.arrow_type() != c.sql.arrow_type() => {
                            return Err(Error::ColumnType { source_label: f.display().to_string(), column: c.name.to_string(), found: h.sql.sql_name(), expected: c.sql.sql_name() });
                        }
                        None if !c.nullable => {
                            return Err(Error::MissingColumn {
                                source_label: f.display().to_string(),
                                column: c.name.to_string(),
                                present: here.values.iter().map(|h| h.name).collect::<Vec<_>>().join(", "),
                            })
                        }
                        _ => {}
                    }
                }
                let meta = b.metadata().clone();
                let name = b.schema().fields().iter().find(|x| x.name().eq_ignore_ascii_case(PARENT_KEY)).map(|x| x.name().clone()).unwrap_or_default();
                let conv = StatisticsConverter::try_new(&name, b.schema(), b.parquet_schema()).map_err(Error::parquet(f))?;
                let mins = conv.row_group_mins(meta.row_groups().iter()).map_err(Error::parquet(f))?;
                let maxes = conv.row_group_maxes(meta.row_groups().iter()).map_err(Error::parquet(f))?;
                let (mins, maxes) = (mins.as_primitive::<Int64Type>(), maxes.as_primitive::<Int64Type>());
                for i in 0..meta.num_row_groups() {
                    let (lo, hi) = if mins.is_null(i) || maxes.is_null(i) { (i64::MIN, i64::MAX) } else { (mins.value(i), maxes.value(i)) };
                    groups.push(Group { file: f.clone(), index: i, lo, hi, rows: None });
                }
            }
            parts.push(Some(Part { table: *t, groups }));
        }
        Ok(ExportChildReader { tables: parts, empty: tables.to_vec(), cached: 0 })
    }
}

/// Decodes one row group into the copy's source form of `t` (PerfSnapshotRunID, then `t`'s
/// values by name; a nullable column the file lacks is NULL).
fn decode(t: &ChildTable, g: &Group) -> Result<RecordBatch> {
    let b = open(&g.file)?;
    let group_rows = b.metadata().row_group(g.index).num_rows().max(1) as usize;
    let file_schema = b.schema().clone();
    let reader = b.with_row_groups(vec![g.index]).with_batch_size(group_rows.min(crate::defaults::INTERNAL_BATCH_ROWS)).build().map_err(Error::parquet(&g.file))?;
    let label = || g.file.display().to_string();
    let mut batches = Vec::new();
    for b in (crate::source::parquet::PanicSafe { inner: reader, done: false }) {
        batches.push(b.map_err(|e| Error::NotParquet { path: g.file.clone(), message: e.to_string() })?);
    }
    let all = arrow::compute::concat_batches(&file_schema, &batches).map_err(Error::arrow(format!("reading {}", label())))?;
    let out_schema = t.source_schema();
    let find = |name: &str| file_schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name));
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for f in out_schema.fields() {
        match find(f.name()) {
            Some(i) => {
                let col = all.column(i).clone();
                if !f.is_nullable() && col.null_count() > 0 {
                    let row = (0..col.len()).find(|&r| col.is_null(r)).unwrap_or(0);
                    return Err(Error::BadValue { source_label: label(), column: f.name().clone(), message: format!("NULL in row {} of row group {}, but the column is NOT NULL", row + 1, g.index) });
                }
                cols.push(col);
            }
            None => cols.push(new_null_array(f.data_type(), all.num_rows())),
        }
    }
    RecordBatch::try_new(out_schema, cols).map_err(|e| Error::Source { source_label: label(), message: e.to_string() })
}

impl ChildReader for ExportChildReader {
    fn read(&mut self, table: usize, after: i64, upto: i64, _runs: &BatchRuns<'_>) -> Result<RecordBatch> {
        let empty = self.empty.get(table).ok_or_else(|| Error::Internal(format!("child table {table} unknown to this reader")))?.source_schema();
        let Some(Some(part)) = self.tables.get_mut(table) else { return Ok(RecordBatch::new_empty(empty)) };
        let mut out = Vec::new();
        for g in part.groups.iter_mut() {
            if g.hi <= after {
                // Ranges follow each other: this group is not needed again.
                if let Some(r) = g.rows.take() {
                    self.cached -= r.num_rows();
                }
                continue;
            }
            if g.lo > upto {
                continue;
            }
            let decoded;
            let rows = match &g.rows {
                Some(r) => r,
                None => {
                    let r = decode(&part.table, g)?;
                    // Kept when a later range needs it too, and the cache has room.
                    if g.hi > upto && self.cached + r.num_rows() <= CACHE_ROWS {
                        self.cached += r.num_rows();
                        g.rows = Some(r);
                        g.rows.as_ref().ok_or_else(|| Error::Internal("cached row group vanished".into()))?
                    } else {
                        decoded = r;
                        &decoded
                    }
                }
            };
            let ids = rows.column(0).as_primitive::<Int64Type>();
            let keep: BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| id > after && id <= upto))).collect();
            let picked = arrow::compute::filter_record_batch(rows, &keep).map_err(Error::arrow("selecting exported child rows"))?;
            if picked.num_rows() > 0 {
                out.push(picked);
            }
        }
        arrow::compute::concat_batches(&empty, &out).map_err(Error::arrow("reading exported child rows"))
    }
}

/// Whether `p` is (inside) the child folder of an export: `NAME/` or `NAME/<Table>/` beside a
/// `NAME.parquet`. Such paths are no run sources.
pub fn export_of_child_path(p: &Path) -> Option<PathBuf> {
    let dir = if p.is_dir() { p.to_path_buf() } else { p.parent()?.to_path_buf() };
    let mut d = Some(dir.as_path());
    for _ in 0..2 {
        let here = d?;
        let name = here.file_name()?.to_str()?;
        let run_file = here.with_file_name(format!("{name}.parquet"));
        if run_file.is_file() {
            return Some(run_file);
        }
        d = here.parent();
    }
    None
}

/// A shared handle, so each part of a source reads the same list.
pub type Shared = Arc<ExportChildren>;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    fn write(path: &Path, batch: &RecordBatch, row_group_rows: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(row_group_rows)).build();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    /// Unsorted rows in small row groups, split over two files of `NAME/<Table>/`, text without
    /// metadata, an identity column: every range returns exactly its rows, each once.
    #[test]
    fn unsorted_files_without_metadata_read_by_ranges_return_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let run_file = dir.path().join("SQL01.parquet");
        std::fs::write(&run_file, b"runs").unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("T1ID", DataType::Int64, false),
            Field::new("PerfSnapshotRunID", DataType::Int64, false),
            Field::new("N", DataType::Int32, true),
            Field::new("Text", DataType::Utf8, true),
        ]));
        // Run IDs 1..=40, three rows each, in a scrambled order.
        let mut rows: Vec<(i64, i32)> = (1..=40).flat_map(|r| (0..3).map(move |k| (r, k))).collect();
        rows.sort_by_key(|&(r, k)| (r * 7_919 + k as i64 * 31) % 97);
        let batch = |part: &[(i64, i32)], first_id: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values((0..part.len() as i64).map(|i| first_id + i))),
                    Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.0))),
                    Arc::new(Int32Array::from_iter(part.iter().map(|r| (r.1 != 1).then_some(r.1)))),
                    Arc::new(StringArray::from_iter_values(part.iter().map(|r| format!("run {} row {}", r.0, r.1)))),
                ],
            )
            .unwrap()
        };
        let (a, b) = rows.split_at(70);
        write(&dir.path().join("SQL01/T1/part-0.parquet"), &batch(a, 1), 8);
        write(&dir.path().join("SQL01/T1/part-1.parquet"), &batch(b, 71), 8);
        // A table without PerfSnapshotRunID is unreadable, with the reason.
        let bad = RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("X", DataType::Int32, false)])), vec![Arc::new(Int32Array::from(vec![1]))]).unwrap();
        write(&dir.path().join("SQL01/T2.parquet"), &bad, 8);

        let export = of_export(&run_file).unwrap().unwrap();
        assert_eq!(export.tables.len(), 1);
        let t = export.tables[0];
        assert_eq!((t.name, t.identity), ("T1", Some("T1ID")));
        assert_eq!(t.values.iter().map(|c| (c.name, c.sql)).collect::<Vec<_>>(), [("N", SqlType::Int), ("Text", SqlType::NVarCharMax)]);
        assert_eq!(export.unreadable.len(), 1);
        assert!(export.unreadable[0].1.contains("PerfSnapshotRunID"), "{:?}", export.unreadable);

        let mut reader = ExportChildReader::new(&export, &[t]).unwrap();
        let runs = BatchRuns { ids: &[], snapshot_ms: &[] };
        let mut seen = Vec::new();
        let mut below = i64::MIN;
        for upto in [5, 6, 17, 39, i64::MAX] {
            let got = reader.read(0, below, upto, &runs).unwrap();
            let ids = got.column(0).as_primitive::<Int64Type>();
            let text = got.column(2).as_string::<i32>();
            for r in 0..got.num_rows() {
                assert!(ids.value(r) > below && ids.value(r) <= upto);
                seen.push(text.value(r).to_string());
            }
            below = upto;
        }
        let mut want: Vec<String> = rows.iter().map(|r| format!("run {} row {}", r.0, r.1)).collect();
        want.sort();
        seen.sort();
        assert_eq!(seen, want);
        assert!(reader.cached <= CACHE_ROWS);
    }
}
