//! The Parquet staging dataset.
//!
//! ```text
//! DIR/
//!   servers.csv                               ServerName,ServerID registry
//!   PerfSnapshotRun/ServerID=<id>/part-<run>-<worker>.parquet
//!   _perfcopy/watermarks.json                 how far each source was copied
//!   _perfcopy/failures.json                   each source's last failed copy
//!   _perfcopy/locks/                          file locks: per source, per ServerID, per run,
//!                                             and short ones around servers.csv and the commit
//! ```
//! Several runs may write one stage at once: each locks its sources (a second run of one
//! source is refused, naming the holder), then the ServerIDs whose rows it copies (a run that
//! copies another source of the same server waits), so the key check against the stage always
//! sees every committed row of its servers.
//! Files are zstd-compressed Parquet with the target columns and exact types (ServerID is both
//! in the path, for Hive partitioning, and in the file, so a file is complete on its own).
//! Files are written as `.part-….parquet.tmp` (hidden from DuckDB, pyarrow and Spark) and
//! renamed only when the whole run succeeded; the watermarks are written after the renames.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::defaults;
use crate::error::{Error, Result};
use arrow::datatypes::SchemaRef;

use crate::schema::{target_schema, tgt, ChildTable, RUN, TABLE_DIR};
use crate::sink::{lock_holder, FinalMark, Load, LoadWriter, LockGuard, LockedSource, Recorded, Target, Watermark, WriteUnit};
use crate::source::stage_children::data_files;
use crate::source::BatchIter;
use crate::transform::remap::ServerIdMap;

/// Writer settings of a stage.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// zstd level of the files.
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Rows per read batch when the stage is read back.
    pub batch_rows: usize,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions { zstd_level: defaults::ZSTD_LEVEL, row_group_rows: defaults::ROW_GROUP_ROWS, batch_rows: defaults::BATCH_ROWS }
    }
}

/// A Parquet stage directory.
pub struct Stage {
    dir: PathBuf,
    label: String,
    options: StageOptions,
    /// Whether this run may create the directory (false for read-only uses like verify).
    create: bool,
    /// The registry with this run's new servers, written at commit (so a run that fails
    /// leaves servers.csv as it was), and the registry lock, held until then.
    registry_update: Mutex<Option<(ServerIdMap, LockFile)>>,
}

impl Stage {
    /// A stage at `dir`; `create` allows creating it on first write.
    pub fn new(dir: &Path, options: StageOptions, create: bool) -> Stage {
        Stage { dir: dir.to_path_buf(), label: dir.display().to_string(), options, create, registry_update: Mutex::new(None) }
    }

    fn table_dir(&self) -> PathBuf {
        self.dir.join(TABLE_DIR)
    }

    fn registry_path(&self) -> PathBuf {
        self.dir.join("servers.csv")
    }

    fn watermarks_path(&self) -> PathBuf {
        self.dir.join("_perfcopy").join("watermarks.json")
    }

    fn failures_path(&self) -> PathBuf {
        self.dir.join("_perfcopy").join("failures.json")
    }

    fn locks_dir(&self) -> PathBuf {
        self.dir.join("_perfcopy").join("locks")
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Stage { path: self.dir.clone(), message: message.into() }
    }

    /// The committed data files of a server partition.
    pub fn partition_files(&self, server: i32) -> Result<Vec<PathBuf>> {
        data_files(&self.table_dir().join(RUN.partition_dir(server)))
    }

    /// Removes temporary files left by a run that was killed before it could clean up. Only
    /// called with the stage lock held, so no live run owns them.
    /// Runs that hold their run lock now (still writing); a dead run's lock file is removed.
    fn live_runs(&self) -> Result<Vec<String>> {
        let dir = self.locks_dir();
        let mut live = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(live) };
        for e in entries {
            let p = e.map_err(Error::io(&dir))?.path();
            let Some(run) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("run-")).and_then(|n| n.strip_suffix(".lock")).map(str::to_string) else { continue };
            let Ok(f) = File::open(&p) else { continue };
            match f.try_lock_shared() {
                Ok(()) => {
                    let _ = std::fs::remove_file(&p);
                }
                Err(_) => live.push(run),
            }
        }
        Ok(live)
    }

    fn remove_stale_temporaries(&self) -> Result<()> {
        let live: Vec<String> = self.live_runs()?.into_iter().map(|r| format!(".part-{r}-")).collect();
        // Every table's partitions: PerfSnapshotRun's and the child tables'.
        let mut dirs = Vec::new();
        for t in std::fs::read_dir(&self.dir).map_err(Error::io(&self.dir))? {
            let t = t.map_err(Error::io(&self.dir))?.path();
            if !t.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(&t).map_err(Error::io(&t))? {
                let e = e.map_err(Error::io(&t))?;
                if e.file_name().to_str().is_some_and(|n| RUN.is_partition_dir(n)) && e.path().is_dir() {
                    dirs.push(e.path());
                }
            }
        }
        for dir in dirs {
            for e in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
                let p = e.map_err(Error::io(&dir))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with(".part-") && name.ends_with(".tmp") && !live.iter().any(|l| name.starts_with(l.as_str())) {
                    tracing::info!("removing {} left by an interrupted run", p.display());
                    std::fs::remove_file(&p).map_err(Error::write(&p))?;
                }
            }
        }
        Ok(())
    }

    /// ServerIDs that have a partition directory.
    pub fn partitions(&self) -> Result<BTreeSet<i32>> {
        let dir = self.table_dir();
        let mut out = BTreeSet::new();
        if !dir.exists() {
            return Ok(out);
        }
        for e in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let e = e.map_err(Error::io(&dir))?;
            if let Some(id) = e.file_name().to_str().and_then(|n| RUN.partition_of(n)) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// Reads the given files' columns (by target column index), in file order.
    fn read_files(&self, files: Vec<PathBuf>, columns: Vec<usize>, ranges: Option<Vec<(i64, i64)>>) -> BatchIter {
        let batch_rows = self.options.batch_rows;
        let iter = files.into_iter().flat_map(move |path| {
            let opened = (|| -> Result<_> {
                let file = File::open(&path).map_err(Error::io(&path))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(&path))?;
                check_stage_schema(&path, b.schema())?;
                let mut groups: Vec<usize> = (0..b.metadata().num_row_groups()).collect();
                if let Some(r) = &ranges {
                    groups = prune_row_groups(&b, r);
                }
                let mask = ProjectionMask::roots(b.parquet_schema(), columns.clone());
                b.with_projection(mask)
                    .with_row_groups(groups)
                    .with_batch_size(batch_rows)
                    .build()
                    .map_err(Error::parquet(&path))
            })();
            let items: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match opened {
                Err(e) => Box::new(std::iter::once(Err(e))),
                Ok(reader) => {
                    let p = path.clone();
                    Box::new(reader.map(move |b| b.map_err(|e| Error::Stage { path: p.clone(), message: e.to_string() })))
                }
            };
            items
        });
        Box::new(iter)
    }
}

/// Row groups whose SnapshotUTC statistics intersect one of the ranges (inclusive, as the
/// [`Target`] methods take them).
fn prune_row_groups(b: &ParquetRecordBatchReaderBuilder<File>, ranges: &[(i64, i64)]) -> Vec<usize> {
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
    let meta = b.metadata();
    let n = meta.num_row_groups();
    let all: Vec<usize> = (0..n).collect();
    let Ok(conv) = StatisticsConverter::try_new(RUN.snapshot_time, b.schema(), b.parquet_schema()) else {
        return all;
    };
    let (Ok(mins), Ok(maxes)) = (conv.row_group_mins(meta.row_groups().iter()), conv.row_group_maxes(meta.row_groups().iter())) else {
        return all;
    };
    let (mins, maxes) = (mins.as_primitive::<arrow::datatypes::TimestampMillisecondType>(), maxes.as_primitive::<arrow::datatypes::TimestampMillisecondType>());
    all.into_iter()
        .filter(|&i| {
            use arrow::array::Array;
            if mins.is_null(i) || maxes.is_null(i) {
                return true;
            }
            let (lo, hi) = (mins.value(i), maxes.value(i));
            ranges.iter().any(|&(a, z)| lo <= z && hi >= a)
        })
        .collect()
}

/// A stage file must have the target columns with their exact types.
fn check_stage_schema(path: &Path, schema: &arrow::datatypes::SchemaRef) -> Result<()> {
    let want = target_schema();
    for f in want.fields() {
        match schema.field_with_name(f.name()) {
            Ok(g) if g.data_type() == f.data_type() => {}
            Ok(g) => {
                return Err(Error::Stage {
                    path: path.to_path_buf(),
                    message: format!("column '{}' has type {}, expected {}", f.name(), g.data_type(), f.data_type()),
                })
            }
            Err(_) => {
                return Err(Error::Stage { path: path.to_path_buf(), message: format!("column '{}' is missing", f.name()) })
            }
        }
    }
    Ok(())
}

/// A held lock file (`flock`), removed when dropped, so a finished or refused run leaves
/// nothing behind. It says who holds it (for the message of a run it stops).
struct LockFile {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Removed while still held: a run waiting on this file finds it gone once it gets
        // the lock, and takes the lock of the file that has the name now (see `acquire`).
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
        if let Some(dir) = self.path.parent() {
            if std::fs::remove_dir(dir).is_ok() {
                let _ = dir.parent().map(std::fs::remove_dir);
            }
        }
    }
}

/// Whether `file` is still the file at `path` (it was not removed and made again).
fn is_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Takes lock file `name` in `dir`. When another run holds it: `Ok(Err(holder))` without
/// `wait`; with `wait`, tells it who and waits.
fn acquire(dir: &Path, name: &str, wait: Option<&dyn Fn(&str)>) -> Result<std::result::Result<LockFile, String>> {
    let path = dir.join(name);
    let mut told = false;
    loop {
        std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
        let file = match std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path) {
            Ok(f) => f,
            // The folder was removed by a run that just dropped its last lock: again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Write { path, source: e }),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = holder_of(&path);
                let Some(w) = wait else { return Ok(Err(holder)) };
                if !told {
                    w(&holder);
                    told = true;
                }
                file.lock().map_err(|e| Error::Write { path: path.clone(), source: e })?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::Write { path, source: e }),
        }
        if is_at(&file, &path) {
            let mut lock = LockFile { path, file: Some(file) };
            if let Some(f) = lock.file.as_mut() {
                let _ = f.set_len(0);
                let _ = f.write_all(lock_holder().as_bytes());
            }
            return Ok(Ok(lock));
        }
    }
}

/// Takes lock file `name` in `dir`, waiting for another run that holds it.
fn short_lock(dir: &Path, name: &str) -> Result<LockFile> {
    acquire(dir, name, Some(&|_: &str| {}))?.map_err(|h| Error::Internal(format!("lock {name} not taken ({h})")))
}

/// Who holds the lock file at `path`, as it says.
fn holder_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        format!("it holds {}", path.display())
    } else {
        text.to_string()
    }
}

/// A file name part for `identity`: its letters and digits (the last 60), and a hash of all
/// of it (FNV-1a), so distinct identities never share a lock.
fn file_key(identity: &str) -> String {
    let clean: String = identity.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let tail: String = clean.chars().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{tail}-{:016x}", crate::sink::stable_hash(identity))
}

/// `PERFCOPY_TEST_ABORT_AFTER_RENAMES=N`: the crash trials' hook into the one moment a random
/// SIGKILL rarely hits, the commit's renames: the process aborts right after the N-th.
fn crash_hook() -> Option<usize> {
    std::env::var("PERFCOPY_TEST_ABORT_AFTER_RENAMES").ok().and_then(|v| v.parse().ok())
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct WatermarkFile {
    sources: Vec<Watermark>,
}

/// `_perfcopy/failures.json`: each source's last failed copy.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct FailureFile {
    sources: Vec<Failure>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Failure {
    source: String,
    utc: String,
    message: String,
}

fn read_failures(path: &Path) -> FailureFile {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Records `reason` as the last failure of each of `sources` (written whole, then renamed).
fn record_failure(path: &Path, sources: &[String], reason: &str) -> Result<()> {
    if sources.is_empty() {
        return Ok(());
    }
    // Read, changed and written under the commit lock, as watermarks.json: runs failing at
    // once must not lose each other's record.
    let _commit = short_lock(&path.with_file_name("locks"), "commit.lock")?;
    let mut file = read_failures(path);
    let utc = crate::pipeline::copy::iso(chrono::Utc::now().timestamp_millis());
    for s in sources {
        file.sources.retain(|f| &f.source != s);
        file.sources.push(Failure { source: s.clone(), utc: utc.clone(), message: reason.chars().take(4000).collect() });
    }
    file.sources.sort_by(|a, b| a.source.cmp(&b.source));
    write_json(path, &file)
}

/// Writes `value` as JSON to `path` whole or not at all (a temporary file, then a rename).
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    let written = std::fs::write(&tmp, text).map_err(Error::write(&tmp)).and_then(|()| std::fs::rename(&tmp, path).map_err(Error::write(path)));
    if written.is_err() {
        // A full disk: leave nothing half-written behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}


impl Target for Stage {
    fn label(&self) -> &str {
        &self.label
    }

    fn lock_sources(&self, sources: &[LockedSource]) -> Result<LockGuard> {
        if self.create {
            std::fs::create_dir_all(&self.dir).map_err(Error::write(&self.dir))?;
        }
        let mut held = Vec::new();
        let mut seen = BTreeSet::new();
        for s in sources.iter().filter(|s| seen.insert(s.identity.clone())) {
            match acquire(&self.locks_dir(), &format!("source-{}.lock", file_key(&s.identity)), None)? {
                Ok(l) => held.push(l),
                Err(holder) => {
                    return Err(self.err(format!(
                        "source '{}' is being copied into this stage by another run ({holder}); wait for it to finish, or leave the source out",
                        s.label
                    )))
                }
            }
        }
        Ok(Box::new(held))
    }

    fn lock_servers(&self, ids: &[i32], waiting: &dyn Fn(&str)) -> Result<LockGuard> {
        let ids: BTreeSet<i32> = ids.iter().copied().collect();
        let mut held = Vec::new();
        for id in ids {
            let say = |holder: &str| waiting(&format!("ServerID {id}: waiting for another run that copies rows of it ({holder})"));
            if let Ok(l) = acquire(&self.locks_dir(), &format!("server-{id}.lock"), Some(&say))? {
                held.push(l);
            }
        }
        Ok(Box::new(held))
    }

    fn known_servers(&self) -> Result<ServerIdMap> {
        let p = self.registry_path();
        if p.exists() {
            ServerIdMap::from_csv(&p)
        } else {
            Ok(ServerIdMap::new())
        }
    }

    fn register_servers(&self, names: &BTreeSet<String>, known: &ServerIdMap) -> Result<Vec<(String, i32)>> {
        // servers.csv as it is now (another run may have registered names since this run read
        // it), under its lock, which this run keeps until its commit wrote the new names (a
        // run that fails leaves servers.csv as it was); another run registering names waits.
        let lock = short_lock(&self.locks_dir(), "registry.lock")?;
        let mut registry = self.known_servers()?;
        let mut all = known.clone();
        for (name, id) in registry.entries() {
            if all.get(&name).is_none() {
                all.insert(&name, id).map_err(|m| self.err(m))?;
            }
        }
        let missing: BTreeSet<String> = names.iter().filter(|n| all.get(n).is_none()).cloned().collect();
        let added = all.register(&missing);
        for (name, id) in &added {
            registry.insert(name, *id).map_err(|m| self.err(m))?;
        }
        if !added.is_empty() {
            *self.registry_update.lock().map_err(lock_err)? = Some((registry, lock));
        }
        let mut out = added;
        for n in names.iter().filter(|n| !missing.contains(*n)) {
            if let Some(id) = all.get(n) {
                out.push((n.clone(), id));
            }
        }
        Ok(out)
    }

    fn existing_keys(&self, ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter> {
        let mut iters = Vec::new();
        for (&server, &(lo, hi)) in ranges {
            let files = self.partition_files(server)?;
            iters.push(self.read_files(files, vec![tgt::SNAPSHOT_UTC, tgt::SERVER_ID], Some(vec![(lo, hi)])));
        }
        Ok(Box::new(iters.into_iter().flatten()))
    }

    fn existing_rows(&self, ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter> {
        let all_cols: Vec<usize> = (0..target_schema().fields().len()).collect();
        let mut iters = Vec::new();
        for (&server, r) in ranges {
            let files = self.partition_files(server)?;
            iters.push(self.read_files(files, all_cols.clone(), Some(r.clone())));
        }
        Ok(Box::new(iters.into_iter().flatten()))
    }

    fn watermark(&self, source: &dyn crate::source::Source) -> Result<Recorded> {
        let source_identity = source.identity();
        let p = self.watermarks_path();
        if !p.exists() {
            return Ok(Recorded::Nothing);
        }
        let text = std::fs::read_to_string(&p).map_err(Error::io(&p))?;
        let file: WatermarkFile = serde_json::from_str(&text).map_err(|e| self.err(format!("{}: {e}", p.display())))?;
        Ok(file.sources.into_iter().find(|w| w.source == source_identity).map_or(Recorded::Nothing, Recorded::Mark))
    }

    fn sync_history(&self, source: &dyn crate::source::Source) -> Result<crate::sink::SyncHistory> {
        let mut h = crate::sink::SyncHistory::default();
        if let Recorded::Mark(w) = self.watermark(source)? {
            h.last_success_utc = w.synced_utc;
            h.rows_copied = w.rows_copied;
        }
        if let Some(f) = read_failures(&self.failures_path()).sources.into_iter().find(|f| f.source == source.identity()) {
            h.last_failure_utc = Some(f.utc);
            h.last_failure = Some(f.message);
        }
        Ok(h)
    }

    fn for_each_child_batch(&self, table: &ChildTable, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
        let dir = self.dir.join(table.name);
        if !dir.is_dir() {
            return Ok(0);
        }
        let keyed = table.keyed_schema();
        for e in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let part = e.map_err(Error::io(&dir))?.path();
            if !part.is_dir() || !part.file_name().and_then(|n| n.to_str()).is_some_and(|n| RUN.is_partition_dir(n)) {
                continue;
            }
            for p in data_files(&part)? {
                let file = File::open(&p).map_err(Error::io(&p))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(Error::parquet(&p))?
                    .with_batch_size(self.options.batch_rows)
                    .build()
                    .map_err(Error::parquet(&p))?;
                for b in reader {
                    let b = b.and_then(|b| ChildTable::rekeyed(&keyed, &b)).map_err(|e| Error::Stage { path: p.clone(), message: e.to_string() })?;
                    f(b)?;
                }
            }
        }
        // Runs are written before their children: a stage has no child rows without a run.
        Ok(0)
    }

    fn begin(&self, _workers: usize, sources: Vec<crate::sink::SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>> {
        let table = self.table_dir();
        std::fs::create_dir_all(&table).map_err(Error::write(&table))?;
        let run = format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"), std::process::id());
        // Held while this run's temporary files exist: another run removes only temporaries
        // of runs that hold no such lock (they died).
        let run_lock = short_lock(&self.locks_dir(), &format!("run-{run}.lock"))?;
        self.remove_stale_temporaries()?;
        // Slot 0 is PerfSnapshotRun; slot i + 1 the load's child table i.
        let mut tables = vec![(table.clone(), target_schema())];
        for c in children {
            let dir = self.dir.join(c.name);
            std::fs::create_dir_all(&dir).map_err(Error::write(&dir))?;
            tables.push((dir, c.keyed_schema()));
        }
        Ok(Box::new(StageLoad {
            _run_lock: run_lock,
            locks_dir: self.locks_dir(),
            table,
            tables: Arc::new(tables),
            registry: self.registry_update.lock().map_err(lock_err)?.take().map(|(m, lock)| (self.registry_path(), m, lock)),
            watermarks_path: self.watermarks_path(),
            sources: sources.iter().map(|m| m.identity.clone()).collect(),
            failures_path: self.failures_path(),
            run,
            options: self.options.clone(),
            pending: Arc::new(Mutex::new(Vec::new())),
            created: Arc::new(Mutex::new(Vec::new())),
        }))
    }
}

struct StageLoad {
    /// This run's lock file, held while its temporaries exist.
    _run_lock: LockFile,
    locks_dir: PathBuf,
    table: PathBuf,
    /// The identities of the load's sources, and where a failure is recorded for them.
    sources: Vec<String>,
    failures_path: PathBuf,
    /// Folder and file schema of each table the load writes: PerfSnapshotRun, then its child tables.
    tables: Arc<Vec<(PathBuf, SchemaRef)>>,
    /// servers.csv and its new content, when this run registered servers.
    registry: Option<(PathBuf, ServerIdMap, LockFile)>,
    watermarks_path: PathBuf,
    run: String,
    options: StageOptions,
    /// (temporary, final) names of finished files.
    pending: Arc<Mutex<Vec<(PathBuf, PathBuf)>>>,
    /// Every temporary file created, for abort.
    created: Arc<Mutex<Vec<PathBuf>>>,
}

fn lock_err<T>(_: T) -> Error {
    Error::Internal("a writer thread panicked while holding the stage's file list".into())
}

impl Load for StageLoad {
    fn writer(&self, worker: usize) -> Result<Box<dyn LoadWriter>> {
        let level = ZstdLevel::try_new(self.options.zstd_level).map_err(Error::parquet(&self.table))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(self.options.row_group_rows))
            .set_created_by(format!("perfcopy {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Box::new(StageWriter {
            tables: self.tables.clone(),
            name: format!("part-{}-{worker}", self.run),
            props,
            files: HashMap::new(),
            present: HashMap::new(),
            pending: self.pending.clone(),
            created: self.created.clone(),
        }))
    }

    fn commit(self: Box<Self>, marks: Vec<FinalMark>) -> Result<()> {
        let now = crate::pipeline::copy::iso(chrono::Utc::now().timestamp_millis());
        let watermarks: Vec<Watermark> = marks
            .into_iter()
            .map(|m| Watermark { synced_utc: Some(now.clone()), rows_copied: Some(m.rows_written), ..m.watermark })
            .collect();
        // The registry first: data files must never carry an ID servers.csv does not have.
        if let Some((path, registry, _lock)) = &self.registry {
            registry.write_csv(path)?;
        }
        let pending = std::mem::take(&mut *self.pending.lock().map_err(lock_err)?);
        let mut dirs = BTreeSet::new();
        // PerfSnapshotRun's files first, then the child tables': a crash in between leaves runs
        // whose children are missing, never children of runs the stage does not hold.
        let run_dir = self.table.clone();
        let mut pending = pending;
        pending.sort_by_key(|(_, fin)| !fin.starts_with(&run_dir));
        let abort_after = crash_hook();
        for (i, (tmp, fin)) in pending.iter().enumerate() {
            std::fs::rename(tmp, fin).map_err(Error::write(fin))?;
            if let Some(d) = fin.parent() {
                dirs.insert(d.to_path_buf());
            }
            if abort_after == Some(i + 1) {
                eprintln!("perfcopy: test hook: aborting after rename {} of {}", i + 1, pending.len());
                std::process::abort();
            }
        }
        for d in dirs {
            // Make the renames durable before the watermarks claim the rows are there.
            if let Ok(f) = File::open(&d) {
                let _ = f.sync_all();
            }
        }
        if !watermarks.is_empty() {
            let _commit = short_lock(&self.locks_dir, "commit.lock")?;
            let mut file: WatermarkFile = match std::fs::read_to_string(&self.watermarks_path) {
                Ok(t) => serde_json::from_str(&t).unwrap_or_default(),
                Err(_) => WatermarkFile::default(),
            };
            for w in watermarks {
                file.sources.retain(|x| x.source != w.source);
                file.sources.push(w);
            }
            file.sources.sort_by(|a, b| a.source.cmp(&b.source));
            write_json(&self.watermarks_path, &file)?;
        }
        Ok(())
    }

    fn abort(self: Box<Self>, reason: &str) {
        if let Err(e) = record_failure(&self.failures_path, &self.sources, reason) {
            tracing::warn!("could not record the failure in {}: {e}", self.failures_path.display());
        }
        if let Ok(created) = self.created.lock() {
            for p in created.iter() {
                let _ = std::fs::remove_file(p);
                // A partition folder this run created stays only if it holds other files.
                if let Some(dir) = p.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

/// Bytes a stage file's unfinished row group may buffer before it is written out.
const ROW_GROUP_BUFFER_BYTES: usize = 16 << 20;
/// Bytes all of one writer's open files may buffer together: with many servers and child
/// tables open at once, the largest unfinished row groups are written out early instead.
const WRITER_BUFFER_BYTES: usize = 64 << 20;

struct StageWriter {
    tables: Arc<Vec<(PathBuf, SchemaRef)>>,
    name: String,
    props: WriterProperties,
    /// Per (table slot, ServerID): its file's temporary and final name, and its writer.
    files: HashMap<(usize, i32), (PathBuf, PathBuf, ArrowWriter<File>)>,
    /// Per (child table slot, ServerID): the runs (SnapshotUTC) the stage's committed files
    /// hold rows of, read when first needed.
    present: HashMap<(usize, i32), HashSet<i64>>,
    pending: Arc<Mutex<Vec<(PathBuf, PathBuf)>>>,
    created: Arc<Mutex<Vec<PathBuf>>>,
}

impl LoadWriter for StageWriter {
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()> {
        for (server, part) in crate::transform::split_by_server(unit.rows)? {
            self.write_server(0, server, &part)?;
        }
        for (i, rows) in unit.children.iter().enumerate() {
            for (server, part) in crate::transform::split_by_server_at(rows, crate::schema::child::SERVER_ID)? {
                self.write_server(i + 1, server, &part)?;
            }
        }
        // Children of runs the stage holds: only for runs without any rows of the table yet.
        for (i, rows) in unit.completing.iter().enumerate() {
            for (server, part) in crate::transform::split_by_server_at(rows, crate::schema::child::SERVER_ID)? {
                let part = self.without_present(i + 1, server, &part)?;
                self.write_server(i + 1, server, &part)?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        for (tmp, fin, w) in self.files.into_values() {
            let file = w.into_inner().map_err(Error::parquet(&tmp))?;
            file.sync_all().map_err(Error::write(&tmp))?;
            self.pending.lock().map_err(lock_err)?.push((tmp, fin));
        }
        Ok(())
    }
}

impl StageWriter {
    /// The rows of `rows` (keyed child rows of one server) whose run has no rows of the table
    /// in the stage's committed files.
    fn without_present(&mut self, slot: usize, server_id: i32, rows: &RecordBatch) -> Result<RecordBatch> {
        if !self.present.contains_key(&(slot, server_id)) {
            let (table, _) = self.tables.get(slot).cloned().ok_or_else(|| Error::Internal(format!("stage table {slot} unknown")))?;
            let dir = table.join(RUN.partition_dir(server_id));
            let mut runs = HashSet::new();
            for p in data_files(&dir)? {
                let file = File::open(&p).map_err(Error::io(&p))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet(&p))?;
                let mask = ProjectionMask::roots(b.parquet_schema(), [crate::schema::child::SNAPSHOT_UTC]);
                for batch in b.with_projection(mask).build().map_err(Error::parquet(&p))? {
                    let batch = batch.map_err(|e| Error::Stage { path: p.clone(), message: e.to_string() })?;
                    runs.extend(crate::source::normalize::snapshot_ms(&batch, 0).values().iter().copied());
                }
            }
            self.present.insert((slot, server_id), runs);
        }
        let present = &self.present[&(slot, server_id)];
        let ts = crate::source::normalize::snapshot_ms(rows, crate::schema::child::SNAPSHOT_UTC);
        let keep: arrow::array::BooleanArray = ts.values().iter().map(|t| Some(!present.contains(t))).collect();
        arrow::compute::filter_record_batch(rows, &keep).map_err(Error::arrow("selecting child rows"))
    }

    fn write_server(&mut self, slot: usize, server_id: i32, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (table, schema) = self.tables.get(slot).cloned().ok_or_else(|| Error::Internal(format!("stage table {slot} unknown")))?;
        if !self.files.contains_key(&(slot, server_id)) {
            let dir = table.join(RUN.partition_dir(server_id));
            std::fs::create_dir_all(&dir).map_err(Error::write(&dir))?;
            let fin = dir.join(format!("{}.parquet", self.name));
            let tmp = dir.join(format!(".{}.parquet.tmp", self.name));
            let file = File::create(&tmp).map_err(Error::write(&tmp))?;
            self.created.lock().map_err(lock_err)?.push(tmp.clone());
            let w = ArrowWriter::try_new(file, schema, Some(self.props.clone())).map_err(Error::parquet(&tmp))?;
            self.files.insert((slot, server_id), (tmp, fin, w));
        }
        let (tmp, _, w) = self
            .files
            .get_mut(&(slot, server_id))
            .ok_or_else(|| Error::Internal("stage writer vanished".into()))?;
        w.write(batch).map_err(Error::parquet(tmp.as_path()))?;
        // A row group is buffered until it is complete: wide child rows (long text) close one
        // early, so each open file holds at most this much.
        if w.in_progress_size() > ROW_GROUP_BUFFER_BYTES {
            w.flush().map_err(Error::parquet(tmp.as_path()))?;
        }
        self.bound_buffers()
    }

    /// Writes out the largest unfinished row groups while all open files together buffer
    /// more than [`WRITER_BUFFER_BYTES`] (encoders' memory bounded by the writer, not by servers × tables).
    fn bound_buffers(&mut self) -> Result<()> {
        let mut total: usize = self.files.values().map(|(_, _, w)| w.memory_size()).sum();
        while total > WRITER_BUFFER_BYTES {
            let Some((tmp, _, w)) = self.files.values_mut().max_by_key(|(_, _, w)| w.memory_size()) else { break };
            let size = w.memory_size();
            if size == 0 {
                break;
            }
            w.flush().map_err(Error::parquet(tmp.as_path()))?;
            total -= size;
        }
        Ok(())
    }
}
