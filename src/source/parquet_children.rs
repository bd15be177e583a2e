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
//! Utf8 [`SqlType::Text`], FixedSizeBinary(n) BINARY(n). Without metadata a text column has
//! no declared length: it goes into any NVARCHAR or VARCHAR column of a MonitoringDB, each
//! value checked against the column as it is loaded. Any other
//! column type makes the table unreadable (copying it is an error naming file and column).
//!
//! ## Reads
//! Runs come in PerfSnapshotRunID ranges that follow each other. Row groups are chosen by
//! their PerfSnapshotRunID statistics. A row group is streamed in batches of
//! [`STREAM_ROWS`] rows: while its PerfSnapshotRunIDs do not decrease (an export written in ID
//! order, as `SELECT … ORDER BY` and `generate` write it), a range takes the rows up to its end
//! and the rest of the last batch waits for the next range, so a table holds one batch per
//! open row group, however large the groups are. A row group found out of order is decoded
//! whole instead and kept while later ranges still need it (up to [`CACHE_ROWS`] rows and
//! [`CACHE_BYTES`] in all), and dropped once a range has passed it; groups beyond the cache
//! are decoded again for every batch of runs (CPU, not memory: memory stays bounded by the
//! cache and one group).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema, TimeUnit};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{Error, Result};
use crate::schema::{field_collation, ChildTable, FoundColumn, SqlType, PARENT_KEY, SQL_TYPE_KEY};
use crate::source::stage_children::Group;
use crate::source::parquet::PanicSafe;
use crate::source::{BatchRuns, ChildReader};

/// Decoded out-of-order child rows kept across ranges, in all tables of one reader.
pub const CACHE_ROWS: usize = 1 << 20;
/// The same cache's bound in bytes (wide rows with long text reach it first).
pub const CACHE_BYTES: usize = 128 << 20;
/// Rows per batch when a row group is streamed in PerfSnapshotRunID order.
pub const STREAM_ROWS: usize = 8_192;

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
        DataType::Utf8 => SqlType::Text,
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
        cols.push(FoundColumn::new(f.name().clone(), sql_type_of(f)?, f.is_nullable()).collated(field_collation(f)));
    }
    let has_identity = schema.fields().iter().any(|f| f.name().eq_ignore_ascii_case(&identity));
    Ok(ChildTable::discovered(name, cols, has_identity.then_some(identity.as_str())))
}


struct Part {
    /// The copy's description of the table (the output's columns).
    table: ChildTable,
    groups: Vec<Slot>,
}

/// One row group and how it is being read.
struct Slot {
    g: Group,
    /// The file's footer, parsed once for all its groups.
    meta: ArrowReaderMetadata,
    mode: Mode,
}

enum Mode {
    /// Not opened yet.
    Fresh,
    /// Streamed in PerfSnapshotRunID order so far.
    Streaming(Cursor),
    /// Out of order: decoded whole (and maybe cached in `Group::rows`).
    Whole,
    /// Streamed to its end.
    Done,
}

struct Cursor {
    reader: PanicSafe<ParquetRecordBatchReader>,
    /// Rows already decoded that belong to later ranges (source form).
    pending: Option<RecordBatch>,
    /// The highest PerfSnapshotRunID streamed so far.
    last: i64,
}

/// Child rows of an export, by PerfSnapshotRunID range.
pub struct ExportChildReader {
    tables: Vec<Option<Part>>,
    empty: Vec<ChildTable>,
    cached_rows: usize,
    cached_bytes: usize,
}

fn load_meta(path: &Path) -> Result<ArrowReaderMetadata> {
    let file = File::open(path).map_err(Error::io(path))?;
    ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| Error::NotParquet { path: path.to_path_buf(), message: e.to_string() })
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
                let meta = load_meta(f)?;
                let here = describe(t.name, meta.schema()).map_err(|m| Error::Source { source_label: f.display().to_string(), message: m })?;
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
                let pq = meta.metadata();
                let name = meta.schema().fields().iter().find(|x| x.name().eq_ignore_ascii_case(PARENT_KEY)).map(|x| x.name().clone()).unwrap_or_default();
                let conv = StatisticsConverter::try_new(&name, meta.schema(), meta.parquet_schema()).map_err(Error::parquet(f))?;
                let mins = conv.row_group_mins(pq.row_groups().iter()).map_err(Error::parquet(f))?;
                let maxes = conv.row_group_maxes(pq.row_groups().iter()).map_err(Error::parquet(f))?;
                let (mins, maxes) = (mins.as_primitive::<Int64Type>(), maxes.as_primitive::<Int64Type>());
                for i in 0..pq.num_row_groups() {
                    let (lo, hi) = if mins.is_null(i) || maxes.is_null(i) { (i64::MIN, i64::MAX) } else { (mins.value(i), maxes.value(i)) };
                    groups.push(Slot { g: Group { file: f.clone(), index: i, lo, hi, rows: None }, meta: meta.clone(), mode: Mode::Fresh });
                }
            }
            parts.push(Some(Part { table: *t, groups }));
        }
        Ok(ExportChildReader { tables: parts, empty: tables.to_vec(), cached_rows: 0, cached_bytes: 0 })
    }
}

/// Bytes (uncompressed, as the row group's metadata says) a streamed batch holds at most.
const STREAM_BYTES: i64 = 8 << 20;

/// Rows per streamed batch of `s`: [`STREAM_ROWS`], fewer for wide rows (QueryStats' SqlText
/// averages 5 KB a row: 8,192 of them were 40 MB per batch and per reader, the largest heap
/// consumer of a MonitoringDB load), never under 64.
fn stream_rows(s: &Slot) -> usize {
    let g = s.meta.metadata().row_group(s.g.index);
    let per_row = (g.total_byte_size() / g.num_rows().max(1)).max(1);
    ((STREAM_BYTES / per_row) as usize).clamp(64, STREAM_ROWS)
}

/// A reader of one row group in batches of `batch_rows`.
fn group_reader(s: &Slot, batch_rows: usize) -> Result<PanicSafe<ParquetRecordBatchReader>> {
    let file = File::open(&s.g.file).map_err(Error::io(&s.g.file))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, s.meta.clone())
        .with_row_groups(vec![s.g.index])
        .with_batch_size(batch_rows)
        .build()
        .map_err(Error::parquet(&s.g.file))?;
    Ok(PanicSafe { inner: reader, done: false })
}

fn next_batch(t: &ChildTable, g: &Group, reader: &mut PanicSafe<ParquetRecordBatchReader>) -> Result<Option<RecordBatch>> {
    match reader.next() {
        None => Ok(None),
        Some(b) => {
            let b = b.map_err(|e| Error::NotParquet { path: g.file.clone(), message: e.to_string() })?;
            source_form(t, g, &b).map(Some)
        }
    }
}

/// Decodes one whole row group into the copy's source form of `t`.
fn decode(t: &ChildTable, s: &Slot) -> Result<RecordBatch> {
    let group_rows = s.meta.metadata().row_group(s.g.index).num_rows().max(1) as usize;
    let mut reader = group_reader(s, group_rows.min(crate::defaults::INTERNAL_BATCH_ROWS))?;
    let mut batches = Vec::new();
    while let Some(b) = next_batch(t, &s.g, &mut reader)? {
        batches.push(b);
    }
    arrow::compute::concat_batches(&t.source_schema(), &batches).map_err(Error::arrow(format!("reading {}", s.g.file.display())))
}

/// A file's batch in the copy's source form of `t` (PerfSnapshotRunID, then `t`'s values by
/// name; a nullable column the file lacks is NULL).
fn source_form(t: &ChildTable, g: &Group, all: &RecordBatch) -> Result<RecordBatch> {
    let label = || g.file.display().to_string();
    let file_schema = all.schema();
    let out_schema = t.source_schema();
    let find = |name: &str| file_schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name));
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for f in out_schema.fields() {
        match find(f.name()) {
            Some(i) => {
                let col = all.column(i).clone();
                if !f.is_nullable() && col.null_count() > 0 {
                    let row = (0..col.len()).find(|&r| col.is_null(r)).unwrap_or(0);
                    return Err(Error::BadValue { source_label: label(), column: f.name().clone(), message: format!("NULL in a row of row group {} (row {} of a batch), but the column is NOT NULL", g.index, row + 1) });
                }
                cols.push(col);
            }
            None => cols.push(new_null_array(f.data_type(), all.num_rows())),
        }
    }
    RecordBatch::try_new(out_schema, cols).map_err(|e| Error::Source { source_label: label(), message: e.to_string() })
}

/// Streams `s` for the range (after, upto]: `Some(rows)` while its IDs are in order, `None`
/// once they are found out of order (the group is then read whole; rows of earlier ranges are
/// all ≤ `after`, so nothing is returned twice).
fn stream(t: &ChildTable, s: &mut Slot, after: i64, upto: i64) -> Result<Option<Vec<RecordBatch>>> {
    if matches!(s.mode, Mode::Fresh) {
        s.mode = Mode::Streaming(Cursor { reader: group_reader(s, stream_rows(s))?, pending: None, last: i64::MIN });
    }
    let mut mine = Vec::new();
    let Slot { g, mode, .. } = s;
    loop {
        let Mode::Streaming(c) = mode else { return Ok(Some(mine)) };
        let b = match c.pending.take() {
            Some(b) => b,
            None => match next_batch(t, g, &mut c.reader)? {
                Some(b) => b,
                None => {
                    *mode = Mode::Done;
                    return Ok(Some(mine));
                }
            },
        };
        let ids = b.column(0).as_primitive::<Int64Type>();
        let v = ids.values();
        let in_order = ids.null_count() == 0 && v.first().is_none_or(|&f| f >= c.last) && v.windows(2).all(|w| w[0] <= w[1]);
        if !in_order {
            *mode = Mode::Whole;
            return Ok(None);
        }
        let start = v.partition_point(|&id| id <= after);
        let end = v.partition_point(|&id| id <= upto);
        // The highest ID taken; the rest of the batch (all ≥ it) waits in `pending`.
        if end > 0 {
            c.last = v[end - 1];
        }
        if end > start {
            mine.push(b.slice(start, end - start));
        }
        if end < b.num_rows() {
            c.pending = Some(b.slice(end, b.num_rows() - end));
            return Ok(Some(mine));
        }
    }
}

impl ChildReader for ExportChildReader {
    fn read(&mut self, table: usize, after: i64, upto: i64, _runs: &BatchRuns<'_>) -> Result<RecordBatch> {
        let empty = self.empty.get(table).ok_or_else(|| Error::Internal(format!("child table {table} unknown to this reader")))?.source_schema();
        let Some(Some(part)) = self.tables.get_mut(table) else { return Ok(RecordBatch::new_empty(empty)) };
        let mut out = Vec::new();
        for s in part.groups.iter_mut() {
            if s.g.hi <= after {
                // Ranges follow each other: this group is not needed again.
                if let Some(r) = s.g.rows.take() {
                    self.cached_rows -= r.num_rows();
                    self.cached_bytes -= r.get_array_memory_size();
                }
                s.mode = Mode::Done;
                continue;
            }
            if s.g.lo > upto || matches!(s.mode, Mode::Done) {
                continue;
            }
            if matches!(s.mode, Mode::Fresh | Mode::Streaming(_)) {
                if let Some(rows) = stream(&part.table, s, after, upto)? {
                    out.extend(rows);
                    continue;
                }
            }
            let decoded;
            let rows = match &s.g.rows {
                Some(r) => r,
                None => {
                    let r = decode(&part.table, s)?;
                    let bytes = r.get_array_memory_size();
                    // Kept when a later range needs it too, and the cache has room.
                    if s.g.hi > upto && self.cached_rows + r.num_rows() <= CACHE_ROWS && self.cached_bytes + bytes <= CACHE_BYTES {
                        self.cached_rows += r.num_rows();
                        self.cached_bytes += bytes;
                        s.g.rows = Some(r);
                        s.g.rows.as_ref().ok_or_else(|| Error::Internal("cached row group vanished".into()))?
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
        assert_eq!(t.values.iter().map(|c| (c.name, c.sql)).collect::<Vec<_>>(), [("N", SqlType::Int), ("Text", SqlType::Text)]);
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
        assert!(reader.cached_rows <= CACHE_ROWS);
    }

    /// A file sorted by PerfSnapshotRunID with row groups larger than a streamed batch: every
    /// range is streamed (no row group is decoded whole or cached) and returns each row once.
    #[test]
    fn sorted_files_stream_every_range_without_caching() {
        let dir = tempfile::tempdir().unwrap();
        let run_file = dir.path().join("SQL02.parquet");
        std::fs::write(&run_file, b"runs").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("PerfSnapshotRunID", DataType::Int64, false), Field::new("N", DataType::Int64, true)]));
        // 5,000 runs of 4 rows each: 20,000 rows in row groups of 12,000 (> STREAM_ROWS).
        let n = 20_000i64;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values((0..n).map(|i| i / 4 + 1))), Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap();
        assert!(12_000 > STREAM_ROWS);
        write(&dir.path().join("SQL02/T1/part-0.parquet"), &batch, 12_000);
        let export = of_export(&run_file).unwrap().unwrap();
        let t = export.tables[0];
        let mut reader = ExportChildReader::new(&export, &[t]).unwrap();
        let runs = BatchRuns { ids: &[], snapshot_ms: &[] };
        let mut seen = Vec::new();
        let mut below = i64::MIN;
        for upto in [1, 700, 2_999, 3_000, 3_001, 4_999, i64::MAX] {
            let got = reader.read(0, below, upto, &runs).unwrap();
            let ids = got.column(0).as_primitive::<Int64Type>();
            let vals = got.column(1).as_primitive::<Int64Type>();
            for r in 0..got.num_rows() {
                assert!(ids.value(r) > below && ids.value(r) <= upto, "run {} outside ({below}, {upto}]", ids.value(r));
                assert_eq!(ids.value(r), vals.value(r) / 4 + 1);
                seen.push(vals.value(r));
            }
            let part = reader.tables[0].as_ref().unwrap();
            assert!(part.groups.iter().all(|s| !matches!(s.mode, Mode::Whole) && s.g.rows.is_none()), "a sorted row group was decoded whole after range ..={upto}");
            assert_eq!(reader.cached_rows, 0);
            below = upto;
        }
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }

    /// Wide rows (20 KB of text each) are streamed in batches of about 8 MB, not 8,192 rows;
    /// narrow rows keep 8,192. Every row still comes back once.
    #[test]
    fn wide_rows_stream_in_smaller_batches() {
        let dir = tempfile::tempdir().unwrap();
        let run_file = dir.path().join("SQL03.parquet");
        std::fs::write(&run_file, b"runs").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("PerfSnapshotRunID", DataType::Int64, false), Field::new("SqlText", DataType::Utf8, true)]));
        let n = 2_000i64;
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(1..=n)), Arc::new(StringArray::from_iter_values((1..=n).map(|i| format!("{i:06}").repeat(3_400))))],
        )
        .unwrap();
        write(&dir.path().join("SQL03/T1.parquet"), &batch, 10_000);
        let export = of_export(&run_file).unwrap().unwrap();
        let mut reader = ExportChildReader::new(&export, &[export.tables[0]]).unwrap();
        let rows = stream_rows(&reader.tables[0].as_ref().unwrap().groups[0]);
        assert!((300..=500).contains(&rows), "{rows} rows per batch of 20 KB rows");
        let got = reader.read(0, i64::MIN, i64::MAX, &BatchRuns { ids: &[], snapshot_ms: &[] }).unwrap();
        assert_eq!(got.num_rows(), n as usize);
        let text = got.column(1).as_string::<i32>();
        assert!((0..got.num_rows()).all(|r| text.value(r).len() == 20_400));
    }
}
