//! A Parquet export of one DBATools `PerfSnapshotRun` table (with its child tables, if
//! exported: see [`crate::source::parquet_children`]), or one file of a perfcopy stage.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, SchemaRef};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;

use crate::error::{Error, Result};
use crate::schema::src;
use crate::source::normalize::{ColumnMatch, RunIds};
use std::sync::Arc;

use crate::schema::ChildTable;
use crate::source::parquet_children::{self, ExportChildReader, ExportChildren};
use crate::source::stage_children::{StageChildReader, StageChildren};
use crate::source::{BatchIter, ChildReader, ReadRequest, Source};

/// One Parquet file holding one DBATools `PerfSnapshotRun` export.
pub struct ParquetSource {
    path: PathBuf,
    label: String,
    identity: String,
    schema: SchemaRef,
    columns: ColumnMatch,
    /// For a file of a stage: the stage's folder, the file's ServerID partition and the
    /// stage's child tables.
    stage: Option<(PathBuf, i32, Arc<StageChildren>)>,
    /// For an export: its child tables (`NAME/` beside `NAME.parquet`, see
    /// [`crate::source::parquet_children`]).
    export: Option<Arc<ExportChildren>>,
}

impl ParquetSource {
    /// Opens the file's footer and matches its columns; reads no data yet.
    pub fn open(path: &Path) -> Result<ParquetSource> {
        let label = path.display().to_string();
        let builder = builder(path)?;
        let schema = builder.schema().clone();
        // A file inside a stage (`…/ServerID=<id>/part-….parquet`) has no PerfSnapshotRunID.
        let in_stage = path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|n| crate::schema::RUN.is_partition_dir(n));
        let run_ids = if in_stage { RunIds::FilePosition } else { RunIds::Required };
        // STAGE/PerfSnapshotRun/ServerID=<id>/part-….parquet: the stage's child tables belong to it.
        let stage = match (in_stage, path.parent()) {
            (true, Some(part)) => {
                let server = part.file_name().and_then(|n| n.to_str()).and_then(|n| crate::schema::RUN.partition_of(n));
                let root = part.parent().filter(|t| t.file_name().is_some_and(|n| n == crate::schema::RUN.name)).and_then(|t| t.parent());
                match (server, root) {
                    (Some(server), Some(root)) => Some((root.to_path_buf(), server, super::stage_children::of_stage(root)?)),
                    _ => None,
                }
            }
            _ => None,
        };
        let columns = ColumnMatch::with_run_ids(&label, &schema, run_ids)?;
        let export = if in_stage { None } else { parquet_children::of_export(path)?.map(Arc::new) };
        let identity = std::fs::canonicalize(path)
            .map_err(Error::io(path))?
            .display()
            .to_string();
        Ok(ParquetSource {
            path: path.to_path_buf(),
            label,
            identity,
            schema,
            columns,
            stage,
            export,
        })
    }

    /// Whether the file has a ServerID column (older DBATools tables lack it).
    pub fn has_server_id(&self) -> bool {
        self.columns.has_server_id()
    }

    /// Row groups that may hold wanted rows, judged from the footer's statistics. Row groups
    /// without statistics are always read.
    fn row_groups(&self, meta: &ParquetMetaData, builder_schema: &SchemaRef, req: &ReadRequest) -> Vec<usize> {
        let n = meta.num_row_groups();
        let mut keep = vec![true; n];
        let stats = |canonical: usize, max: bool| -> Option<Vec<Option<i64>>> {
            let name = self.columns.source_name(&self.schema, canonical)?;
            let conv = StatisticsConverter::try_new(name, builder_schema, meta.file_metadata().schema_descr()).ok()?;
            let arr = if max {
                conv.row_group_maxes(meta.row_groups().iter()).ok()?
            } else {
                conv.row_group_mins(meta.row_groups().iter()).ok()?
            };
            let arr = arrow::compute::cast(&arr, &arrow::datatypes::DataType::Int64).ok()?;
            let arr = arr.as_primitive::<Int64Type>();
            Some((0..arr.len()).map(|i| arr.is_valid(i).then(|| arr.value(i))).collect())
        };
        if let Some(after) = req.after_run_id {
            if let Some(maxes) = stats(src::RUN_ID, true) {
                for (k, m) in keep.iter_mut().zip(maxes) {
                    if m.is_some_and(|m| m <= after) {
                        *k = false;
                    }
                }
            }
        }
        if let Some(ranges) = &req.time_ranges {
            let scale = time_scale(&self.schema, &self.columns);
            if let (Some(mins), Some(maxes), Some(scale)) = (stats(src::SNAPSHOT_UTC, false), stats(src::SNAPSHOT_UTC, true), scale) {
                for ((k, lo), hi) in keep.iter_mut().zip(mins).zip(maxes) {
                    if let (Some(lo), Some(hi)) = (lo, hi) {
                        let (lo, hi) = (lo.div_euclid(scale), hi.div_euclid(scale));
                        if !ranges.iter().any(|&(a, b)| lo < b && hi >= a) {
                            *k = false;
                        }
                    }
                }
            }
        }
        (0..n).filter(|&i| keep[i]).collect()
    }
}

thread_local! {
    /// Set while this thread runs arrow-rs' Parquet decoder under [`PanicSafe`].
    static IN_DECODER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread now comes from the Parquet decoder and will be caught and
/// reported as an error naming the file (`main`'s panic hook then stays quiet).
pub fn decoder_panic_is_caught() -> bool {
    IN_DECODER.with(|f| f.get())
}

/// Turns a panic inside the Parquet reader (arrow-rs has panicked on some corrupt files; found
/// by fuzzing, see tests/data/fuzz-parquet-panic-1.parquet) into an error for that file, so a
/// corrupt source is a clear error and not a crash.
pub(crate) struct PanicSafe<I> {
    pub(crate) inner: I,
    pub(crate) done: bool,
}

impl<I: Iterator<Item = std::result::Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError>>> Iterator for PanicSafe<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        IN_DECODER.with(|f| f.set(true));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.next()));
        IN_DECODER.with(|f| f.set(false));
        match result {
            Ok(item) => item,
            Err(panic) => {
                self.done = true;
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                Some(Err(arrow::error::ArrowError::ParquetError(format!("corrupt data (the Parquet decoder failed: {what})"))))
            }
        }
    }
}

/// Maps the n-th row read (after row-group pruning) to its row number in the file.
struct RowNumbers {
    /// (first row read from this group, first row of the group in the file), ascending.
    starts: Vec<(u64, u64)>,
}

impl RowNumbers {
    fn new(meta: &ParquetMetaData, selected: &[usize]) -> RowNumbers {
        let mut file_start = Vec::with_capacity(meta.num_row_groups());
        let mut acc = 0u64;
        for g in meta.row_groups() {
            file_start.push(acc);
            acc += g.num_rows() as u64;
        }
        let mut starts = Vec::with_capacity(selected.len());
        let mut read = 0u64;
        for &g in selected {
            starts.push((read, file_start[g]));
            read += meta.row_group(g).num_rows() as u64;
        }
        RowNumbers { starts }
    }

    fn file_row(&self, nth: u64) -> u64 {
        let i = self.starts.partition_point(|&(read, _)| read <= nth).saturating_sub(1);
        match self.starts.get(i) {
            Some(&(read, file)) => file + (nth - read),
            None => nth,
        }
    }
}

/// Units of the file's SnapshotUTC statistics per millisecond.
fn time_scale(schema: &SchemaRef, columns: &ColumnMatch) -> Option<i64> {
    use arrow::datatypes::{DataType, TimeUnit};
    let name = columns.source_name(schema, src::SNAPSHOT_UTC)?;
    match schema.field_with_name(name).ok()?.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some(1),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(1_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(1_000_000),
        _ => None,
    }
}

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(Error::io(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::NotParquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl Source for ParquetSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn child_tables(&self) -> &[ChildTable] {
        match (&self.stage, &self.export) {
            (Some((_, _, c)), _) => &c.tables,
            (None, Some(e)) => &e.tables,
            (None, None) => &[],
        }
    }

    fn unreadable_child_tables(&self) -> &[(String, String)] {
        match (&self.stage, &self.export) {
            (Some((_, _, c)), _) => &c.unreadable,
            (None, Some(e)) => &e.unreadable,
            (None, None) => &[],
        }
    }

    fn child_reader(&self, tables: &[ChildTable]) -> Result<Option<Box<dyn ChildReader>>> {
        match (&self.stage, &self.export) {
            (Some((root, server, _)), _) => Ok(Some(Box::new(StageChildReader::new(root, *server, tables)?))),
            (None, Some(e)) if tables.iter().any(|t| e.tables.iter().any(|x| x.name.eq_ignore_ascii_case(t.name))) => Ok(Some(Box::new(ExportChildReader::new(e, tables)?))),
            _ => Ok(None),
        }
    }

    fn read(&self, req: &ReadRequest) -> Result<BatchIter> {
        let builder = builder(&self.path)?;
        let meta = builder.metadata().clone();
        let arrow_schema = builder.schema().clone();
        let groups = self.row_groups(&meta, &arrow_schema, req);
        let mask = ProjectionMask::roots(builder.parquet_schema(), self.columns.needed(req.projection));
        let reader = builder
            .with_projection(mask)
            .with_row_groups(groups.clone())
            .with_batch_size(req.batch_rows.max(1))
            .build()
            .map_err(Error::parquet(&self.path))?;
        let rows = RowNumbers::new(&meta, &groups);
        let columns = self.columns.clone();
        let projection = req.projection;
        let path = self.path.clone();
        let mut emitted = 0u64;
        let reader = PanicSafe { inner: reader, done: false };
        Ok(Box::new(reader.map(move |batch| {
            let batch = batch.map_err(|e| Error::NotParquet {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let first = emitted;
            emitted += batch.num_rows() as u64;
            let position = |r: usize| rows.file_row(first + r as u64) as i64 + 1;
            columns.normalize_at(&batch, projection, &|r| format!("row {} of the file", position(r)), Some(&position))
        })))
    }
}
