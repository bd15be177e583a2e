//! A stage's child tables, read as a source: `STAGE/<Table>/ServerID=<id>/*.parquet` hold keyed
//! child rows (their run's SnapshotUTC and the stage's ServerID, then the values), so a stage
//! file of runs finds its children by key. Each child row matches the run of its server with
//! its SnapshotUTC, and a stage holds one run per key, so every row is read with exactly one run
//! file. Row groups are chosen by their SnapshotUTC statistics and kept while later batches
//! still need them (batches come in time order), so a partition is decoded about once.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ahash::AHashMap as HashMap;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::TimestampMillisecondType;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::schema::{child, ChildTable, RUN};
use crate::source::{BatchRuns, ChildReader};

/// The child tables of one stage: descriptions from their files' schemas, and tables whose
/// files perfcopy cannot read as child tables (with why).
#[derive(Debug, Default)]
pub struct StageChildren {
    pub tables: Vec<ChildTable>,
    pub unreadable: Vec<(String, String)>,
}

/// The child tables of the stage at `root`, found once per process and stage.
pub fn of_stage(root: &Path) -> Result<Arc<StageChildren>> {
    static SEEN: OnceLock<Mutex<BTreeMap<PathBuf, Arc<StageChildren>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(c) = seen.lock().map_err(|_| Error::Internal("stage table list poisoned".into()))?.get(root) {
        return Ok(c.clone());
    }
    let mut out = StageChildren::default();
    for e in std::fs::read_dir(root).map_err(Error::io(root))? {
        let dir = e.map_err(Error::io(root))?.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if !dir.is_dir() || name == RUN.name || name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let Some(first) = partition_dirs(&dir)?.into_iter().flat_map(|(_, d)| data_files(&d).unwrap_or_default()).next() else { continue };
        let file = File::open(&first).map_err(Error::io(&first))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(&first))?;
        match ChildTable::from_keyed_schema(&name, b.schema()) {
            Ok(t) => out.tables.push(t),
            Err(why) => out.unreadable.push((name, format!("{}: {why}", first.display()))),
        }
    }
    out.tables.sort_by(|a, b| a.name.cmp(b.name));
    let out = Arc::new(out);
    seen.lock().map_err(|_| Error::Internal("stage table list poisoned".into()))?.insert(root.to_path_buf(), out.clone());
    Ok(out)
}

/// `ServerID=<id>` folders of a table folder.
fn partition_dirs(table: &Path) -> Result<Vec<(i32, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(table).map_err(Error::io(table))? {
        let p = e.map_err(Error::io(table))?.path();
        if let Some(id) = p.file_name().and_then(|n| n.to_str()).and_then(|n| RUN.partition_of(n)) {
            if p.is_dir() {
                out.push((id, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Committed data files of a partition folder, in name order (hidden and temporary files
/// excluded); none when the folder does not exist.
pub fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for e in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let p = e.map_err(Error::io(dir))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_') && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// One row group of a child file: the range of the column it is pruned by (SnapshotUTC here,
/// PerfSnapshotRunID in an export; all values when it has no statistics) and, once decoded,
/// its rows.
pub(crate) struct Group {
    pub(crate) file: PathBuf,
    pub(crate) index: usize,
    pub(crate) lo: i64,
    pub(crate) hi: i64,
    pub(crate) rows: Option<RecordBatch>,
}

/// One child table's partition of one server, as the reader sees it.
struct Partition {
    table: ChildTable,
    groups: Vec<Group>,
}

/// Child rows of a stage's run file (one server's partition), by key.
pub struct StageChildReader {
    tables: Vec<Option<Partition>>,
    empty: Vec<ChildTable>,
}

impl StageChildReader {
    /// A reader of `tables` (the copy's descriptions) for the runs of stage server `server` in
    /// the stage at `root`.
    pub fn new(root: &Path, server: i32, tables: &[ChildTable]) -> Result<StageChildReader> {
        let mut parts = Vec::with_capacity(tables.len());
        for t in tables {
            let dir = root.join(t.name).join(RUN.partition_dir(server));
            let files = data_files(&dir)?;
            if files.is_empty() {
                parts.push(None);
                continue;
            }
            let mut groups = Vec::new();
            for f in files {
                let file = File::open(&f).map_err(Error::io(&f))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(&f))?;
                let stage_table = ChildTable::from_keyed_schema(t.name, b.schema()).map_err(|m| Error::Stage { path: f.clone(), message: m })?;
                if stage_table.values.len() != t.values.len() || stage_table.values.iter().zip(t.values).any(|(a, b)| a.name != b.name || a.sql != b.sql) {
                    return Err(Error::Stage { path: f.clone(), message: format!("its columns differ from the other files of dbo.{}", t.name) });
                }
                let meta = b.metadata();
                let conv = StatisticsConverter::try_new(RUN.snapshot_time, b.schema(), b.parquet_schema()).map_err(Error::parquet(&f))?;
                let mins = conv.row_group_mins(meta.row_groups().iter()).map_err(Error::parquet(&f))?;
                let maxes = conv.row_group_maxes(meta.row_groups().iter()).map_err(Error::parquet(&f))?;
                let (mins, maxes) = (mins.as_primitive::<TimestampMillisecondType>(), maxes.as_primitive::<TimestampMillisecondType>());
                for i in 0..meta.num_row_groups() {
                    // A row group without statistics covers all time.
                    let (lo, hi) = if mins.is_null(i) || maxes.is_null(i) { (i64::MIN, i64::MAX) } else { (mins.value(i), maxes.value(i)) };
                    groups.push(Group { file: f.clone(), index: i, lo, hi, rows: None });
                }
            }
            parts.push(Some(Partition { table: *t, groups }));
        }
        Ok(StageChildReader { tables: parts, empty: tables.to_vec() })
    }
}

impl ChildReader for StageChildReader {
    fn read(&mut self, table: usize, _after: i64, _upto: i64, runs: &BatchRuns<'_>) -> Result<RecordBatch> {
        let empty = self.empty.get(table).ok_or_else(|| Error::Internal(format!("child table {table} unknown to this reader")))?.source_schema();
        let Some(Some(part)) = self.tables.get_mut(table) else { return Ok(RecordBatch::new_empty(empty)) };
        if runs.ids.is_empty() {
            return Ok(RecordBatch::new_empty(empty));
        }
        let lo = runs.snapshot_ms.iter().copied().min().unwrap_or(i64::MIN);
        let hi = runs.snapshot_ms.iter().copied().max().unwrap_or(i64::MAX);
        let run_of: HashMap<i64, i64> = runs.snapshot_ms.iter().copied().zip(runs.ids.iter().copied()).collect();
        let mut out: Vec<RecordBatch> = Vec::new();
        for g in part.groups.iter_mut() {
            if g.hi < lo {
                // Batches come in time order: this group is not needed again.
                g.rows = None;
                continue;
            }
            if g.lo > hi {
                continue;
            }
            if g.rows.is_none() {
                let file = File::open(&g.file).map_err(Error::io(&g.file))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(&g.file))?;
                let group_rows = b.metadata().row_group(g.index).num_rows().max(1) as usize;
                let reader = b
                    .with_row_groups(vec![g.index])
                    .with_batch_size(group_rows.min(crate::defaults::INTERNAL_BATCH_ROWS))
                    .build()
                    .map_err(Error::parquet(&g.file))?;
                let mut batches = Vec::new();
                for b in reader {
                    batches.push(b.map_err(|e| Error::Stage { path: g.file.clone(), message: e.to_string() })?);
                }
                let schema = part.table.keyed_schema();
                let batches: Vec<RecordBatch> = batches.iter().map(|b| ChildTable::rekeyed(&schema, b)).collect::<std::result::Result<_, _>>().map_err(|e| Error::Stage { path: g.file.clone(), message: e.to_string() })?;
                g.rows = Some(arrow::compute::concat_batches(&schema, &batches).map_err(Error::arrow("reading stage child rows"))?);
            }
            let Some(rows) = &g.rows else { continue };
            // Rows of this batch's runs, with their run's ID in place of the key.
            let ts = rows.column(child::SNAPSHOT_UTC).as_primitive::<TimestampMillisecondType>();
            let (mut take, mut ids) = (Vec::new(), Vec::new());
            for (r, t) in ts.values().iter().enumerate() {
                if let Some(&id) = run_of.get(t) {
                    take.push(r as u32);
                    ids.push(id);
                }
            }
            if take.is_empty() {
                continue;
            }
            let take = UInt32Array::from(take);
            let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids))];
            for c in &rows.columns()[child::FIRST_VALUE..] {
                cols.push(arrow::compute::take(c.as_ref(), &take, None).map_err(Error::arrow("selecting stage child rows"))?);
            }
            out.push(RecordBatch::try_new(empty.clone(), cols).map_err(|e| Error::Stage { path: g.file.clone(), message: e.to_string() })?);
        }
        arrow::compute::concat_batches(&empty, &out).map_err(Error::arrow("reading stage child rows"))
    }
}
