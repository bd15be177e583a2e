//! Targets: where consolidated rows go. Each kind (MonitoringDB over TDS, a Parquet stage, and
//! bench's scratch table and null target) implements [`Target`]; the pipeline knows nothing
//! else about them.
//!
//! A target answers the questions the pipeline asks before it writes (which servers it knows,
//! which keys it already holds, how far each source was copied) and opens a [`Load`] that
//! writer workers write into; the load becomes visible only at [`Load::commit`].

pub mod mssql;
pub mod null;
pub mod stage;

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::schema::ChildTable;
use crate::source::{BatchIter, SourceFacts};
use crate::transform::remap::ServerIdMap;

/// How far a source has been copied into a target: every row of the source with
/// `PerfSnapshotRunID <= last_run_id` is in the target (itself, or a duplicate of it). A
/// watermark is only a claim: [`crate::pipeline::watermark`] checks it against the source and
/// the target before it is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// [`crate::source::Source::identity`].
    pub source: String,
    /// The highest PerfSnapshotRunID copied.
    pub last_run_id: i64,
    /// SnapshotUTC (ms) of the row with `last_run_id`. `None` only in stage files written by
    /// perfcopy before it recorded it: such a watermark is never used.
    pub last_snapshot_ms: Option<i64>,
    /// What the source's server reported about it when the watermark was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<SourceFacts>,
    /// The child tables copied with the runs up to `last_run_id` (none: runs only, or a
    /// perfcopy before child tables). A copy of another table does not use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_tables: Vec<String>,
    /// When it was recorded (ISO 8601 UTC; stage only, MonitoringDB's ledger has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_utc: Option<String>,
    /// Rows the sync that recorded it wrote (stage only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_copied: Option<u64>,
}

/// Locks held until dropped.
pub type LockGuard = Box<dyn std::any::Any + Send>;

/// A source a run locks in its target.
#[derive(Debug, Clone)]
pub struct LockedSource {
    /// [`crate::source::Source::identity`].
    pub identity: String,
    /// How the user knows it.
    pub label: String,
}

/// Who a lock's holder is, for the message of the run it stops: host, process and start.
pub fn lock_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("COMPUTERNAME").ok()).unwrap_or_else(|| "?".into());
    format!("perfcopy pid {} on {}, started {}", std::process::id(), host.trim(), crate::pipeline::copy::iso(chrono::Utc::now().timestamp_millis()))
}

/// A hash of `s` that is the same in every perfcopy build (FNV-1a, 64 bits), for lock names.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// What a target's records say of a source's syncs, for `perfcopy status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncHistory {
    /// The last successful sync (ISO 8601 UTC).
    pub last_success_utc: Option<String>,
    /// Rows the last successful sync wrote.
    pub rows_copied: Option<u64>,
    /// The last failed sync: when, and its message.
    pub last_failure_utc: Option<String>,
    pub last_failure: Option<String>,
}

/// What a target has recorded for a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing: the source was never copied here (under this identity).
    Nothing,
    /// A watermark, still to be checked.
    Mark(Watermark),
    /// Something the target cannot vouch for (e.g. the ledger row it belongs to was changed
    /// or deleted); the source is read whole.
    Unusable { last_run_id: Option<i64>, reason: String },
}

/// A source's final watermark of a load, recorded at commit.
#[derive(Debug, Clone)]
pub struct FinalMark {
    /// Indexes in the load's [`SourceMeta`] list of the sources it covers (several: the parts
    /// of one split source).
    pub sources: Vec<usize>,
    /// Their watermark: the highest row read of them.
    pub watermark: Watermark,
    /// Rows those sources wrote in this run.
    pub rows_written: u64,
}

/// What a target knows of one source of a load: who it is, for its sync ledger.
#[derive(Debug, Clone)]
pub struct SourceMeta {
    /// [`crate::source::Source::identity`].
    pub identity: String,
    /// What the source's server reports about it (recorded with its watermarks).
    pub facts: Option<SourceFacts>,
    /// The source's own server (`@@SERVERNAME`, or the server most of its rows belong to).
    pub server_name: String,
    /// Its target ServerID.
    pub server_id: i32,
    /// The DBATools database name (or the file name of a Parquet export).
    pub database: String,
    /// Whether the run copies the whole source (no `--since`/`--until`): only then may the
    /// load record watermarks.
    pub watermarks: bool,
    /// Whether this is one of several ID ranges of a source read in parallel: its batches do
    /// not commit in source order, so only the final watermark (at commit) may be recorded.
    pub split: bool,
    /// The child tables the load copies with the runs (recorded with its watermarks).
    pub child_tables: Vec<String>,
}

/// One batch of a source, deduplicated, for the target.
#[derive(Debug, Clone, Copy)]
pub struct WriteUnit<'a> {
    /// Index of the source in the load's [`SourceMeta`] list.
    pub source: usize,
    /// Rows to write (target schema; any ServerIDs; may be empty).
    pub rows: &'a RecordBatch,
    /// A watermark this unit may record: once the unit is durable, every source row up to
    /// this PerfSnapshotRunID is in the target (or in a unit committed before). `None`: this
    /// unit moves no watermark (the final one is recorded at commit).
    pub last_run_id: Option<i64>,
    /// SnapshotUTC of that row.
    pub last_snapshot_ms: Option<i64>,
    /// The child rows of `rows`' runs, one keyed batch ([`ChildTable::keyed_schema`]) per child
    /// table of the load, in the load's order; written in the same unit as their runs.
    pub children: &'a [RecordBatch],
    /// Child rows of runs the target already holds (keyed, per child table likewise): the
    /// target writes a table's rows of such a run only if it holds none of them for the run,
    /// so a run loaded without its children is completed, and none is doubled.
    pub completing: &'a [RecordBatch],
}

/// Whether a target has a child table the copy moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildTableState {
    /// The target has it, with columns that take every value.
    Ready,
    /// The target has no table of that name.
    Missing,
}

/// A destination for consolidated rows.
pub trait Target: Send + Sync {
    /// How the user knows this target; never contains a secret.
    fn label(&self) -> &str;
    /// Takes the target's lock on each of these sources for this run (held until the guard is
    /// dropped), so two perfcopy runs never copy one source into the target at once; runs
    /// with other sources go on. Fails naming the source and the run that holds it.
    fn lock_sources(&self, sources: &[LockedSource]) -> Result<LockGuard>;
    /// Exclusive use of these ServerIDs' rows until the guard is dropped, taken after the key
    /// pass and before the target's keys are read: two runs that copy rows of one server (from
    /// other sources: a restored copy) take turns, so neither misses the other's keys. Waits
    /// for a run that holds one (after telling `waiting` who), in ascending ID order, so two
    /// runs never wait on each other.
    fn lock_servers(&self, ids: &[i32], waiting: &dyn Fn(&str)) -> Result<LockGuard>;
    /// Servers the target already knows (its registry).
    fn known_servers(&self) -> Result<ServerIdMap>;
    /// Adds `names` to the registry with IDs after the highest known in `known` (map and
    /// registry), in name order; returns the IDs given.
    fn register_servers(&self, names: &BTreeSet<String>, known: &ServerIdMap) -> Result<Vec<(String, i32)>>;
    /// Keys the target holds for these servers within these ranges: batches of (SnapshotUTC,
    /// ServerID). A target may return more (the caller filters).
    ///
    /// Every range given to a target is `(first, last)` SnapshotUTC in ms, both ends included:
    /// `(t, t)` is the one instant `t`, `(i64::MIN, i64::MAX)` all time.
    fn existing_keys(&self, ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter>;
    /// Full target rows of these servers within these ranges (inclusive, as for
    /// [`Target::existing_keys`]; target schema), for conflict detection in hot days. A target
    /// may return more (the caller filters).
    fn existing_rows(&self, ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter>;
    /// Whether the target holds the key (ServerID, SnapshotUTC ms).
    fn holds_key(&self, server_id: i32, snapshot_ms: i64) -> Result<bool> {
        let ranges = BTreeMap::from([(server_id, (snapshot_ms, snapshot_ms))]);
        for batch in self.existing_keys(&ranges)? {
            let batch = batch?;
            let ts = crate::source::normalize::snapshot_ms(&batch, 0);
            let ids = batch.column(1).as_primitive::<arrow::datatypes::Int32Type>();
            if ts.values().iter().zip(ids.values()).any(|(&t, &id)| t == snapshot_ms && id == server_id) {
                return Ok(true);
            }
        }
        Ok(false)
    }
    /// What the target recorded for a source (looked up by its identity only).
    fn watermark(&self, source: &dyn crate::source::Source) -> Result<Recorded>;
    /// What the target recorded of `source`'s syncs (successes and failures).
    fn sync_history(&self, _source: &dyn crate::source::Source) -> Result<SyncHistory> {
        Ok(SyncHistory::default())
    }
    /// Whether the target has each of these child tables. A table whose columns cannot take
    /// the values (a missing column, a narrower type) is an error naming the table and column.
    fn child_tables(&self, tables: &[ChildTable]) -> Result<Vec<ChildTableState>> {
        Ok(vec![ChildTableState::Ready; tables.len()])
    }
    /// Creates a child table the target lacks, from the source's columns.
    fn create_child_table(&self, _table: &ChildTable) -> Result<()> {
        Ok(())
    }
    /// Hands every row the target holds of child table `table` to `f`, batch by batch, keyed
    /// by its run ([`ChildTable::keyed_schema`], values in the description's types); rows of a
    /// run the target lacks are counted and returned, not handed over.
    fn for_each_child_batch(&self, _table: &ChildTable, _f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
        Ok(0)
    }
    /// Starts a load of these sources written by `workers` writers. Each source's units go to
    /// one writer, in the source's order; `children` are the child tables its units carry.
    fn begin(&self, workers: usize, sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>>;
}

/// A load in progress.
pub trait Load: Send + Sync {
    /// The writer for worker `worker` (each worker thread owns one).
    fn writer(&self, worker: usize) -> Result<Box<dyn LoadWriter>>;
    /// Makes every row written by finished writers visible, then records the final watermarks
    /// (only now is every survivor they vouch for durable).
    fn commit(self: Box<Self>, marks: Vec<FinalMark>) -> Result<()>;
    /// Stops after `reason` (already scrubbed of secrets): discards what is not durable yet
    /// and records the failure where the target keeps a ledger.
    fn abort(self: Box<Self>, reason: &str);
}

/// One worker's writer.
pub trait LoadWriter: Send {
    /// Writes one unit.
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()>;
    /// Flushes and hands the written data to the load (not yet visible). The pipeline counts
    /// what it wrote itself: a unit is written once `write` returned.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A target that holds nothing before a load and keeps nothing after it (bench's null target
/// and scratch table): no lock (nothing to protect), no registry (IDs are given without being
/// written anywhere), no keys, no watermarks. It only says where a load's rows go.
pub trait ThrowawayTarget: Send + Sync {
    /// How the user knows this target; never contains a secret.
    fn label(&self) -> &str;
    /// Starts a load, as [`Target::begin`].
    fn begin(&self, workers: usize, sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>>;
}

impl<T: ThrowawayTarget> Target for T {
    fn label(&self) -> &str {
        ThrowawayTarget::label(self)
    }
    fn lock_sources(&self, _sources: &[LockedSource]) -> Result<LockGuard> {
        Ok(Box::new(()))
    }
    fn lock_servers(&self, _ids: &[i32], _waiting: &dyn Fn(&str)) -> Result<LockGuard> {
        Ok(Box::new(()))
    }
    fn known_servers(&self) -> Result<ServerIdMap> {
        Ok(ServerIdMap::new())
    }
    fn register_servers(&self, names: &BTreeSet<String>, known: &ServerIdMap) -> Result<Vec<(String, i32)>> {
        Ok(known.clone().register(names))
    }
    fn existing_keys(&self, _ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter> {
        Ok(Box::new(std::iter::empty()))
    }
    fn existing_rows(&self, _ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter> {
        Ok(Box::new(std::iter::empty()))
    }
    fn watermark(&self, _source: &dyn crate::source::Source) -> Result<Recorded> {
        Ok(Recorded::Nothing)
    }
    fn begin(&self, workers: usize, sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>> {
        ThrowawayTarget::begin(self, workers, sources, children)
    }
}

/// A shared target is a target (so a caller can keep a handle, e.g. to read counters after a run).
impl<T: Target + ?Sized> Target for std::sync::Arc<T> {
    fn label(&self) -> &str {
        (**self).label()
    }
    fn lock_sources(&self, sources: &[LockedSource]) -> Result<LockGuard> {
        (**self).lock_sources(sources)
    }
    fn lock_servers(&self, ids: &[i32], waiting: &dyn Fn(&str)) -> Result<LockGuard> {
        (**self).lock_servers(ids, waiting)
    }
    fn sync_history(&self, source: &dyn crate::source::Source) -> Result<SyncHistory> {
        (**self).sync_history(source)
    }
    fn known_servers(&self) -> Result<ServerIdMap> {
        (**self).known_servers()
    }
    fn register_servers(&self, names: &BTreeSet<String>, known: &ServerIdMap) -> Result<Vec<(String, i32)>> {
        (**self).register_servers(names, known)
    }
    fn existing_keys(&self, ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter> {
        (**self).existing_keys(ranges)
    }
    fn existing_rows(&self, ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter> {
        (**self).existing_rows(ranges)
    }
    fn holds_key(&self, server_id: i32, snapshot_ms: i64) -> Result<bool> {
        (**self).holds_key(server_id, snapshot_ms)
    }
    fn watermark(&self, source: &dyn crate::source::Source) -> Result<Recorded> {
        (**self).watermark(source)
    }
    fn child_tables(&self, tables: &[ChildTable]) -> Result<Vec<ChildTableState>> {
        (**self).child_tables(tables)
    }
    fn create_child_table(&self, table: &ChildTable) -> Result<()> {
        (**self).create_child_table(table)
    }
    fn for_each_child_batch(&self, table: &ChildTable, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
        (**self).for_each_child_batch(table, f)
    }
    fn begin(&self, workers: usize, sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>> {
        (**self).begin(workers, sources, children)
    }
}
