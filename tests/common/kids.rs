//! Child rows as the tests' model sees them (issue 14): each row as canonical text of its
//! values, grouped by its run's key (ServerID, SnapshotUTC) into sorted lists (multisets).
//! Read straight from Parquet with arrow-rs, from the in-process test server as Arrow, and
//! (in tds_bin) over TDS with tiberius: never through perfcopy's readers.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType, UInt8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{fold, ms, NameMap, SrcRow};

/// Every child table `perfcopy generate` writes by default: the eleven of SCHEMA.md.
pub const ALL_TABLES: [&str; 11] = [
    "PerfSnapshotDB",
    "PerfSnapshotWaitStats",
    "PerfSnapshotWorkload",
    "PerfSnapshotErrorLog",
    "PerfSnapshotMemory",
    "PerfSnapshotQueryStats",
    "PerfSnapshotIOStats",
    "PerfSnapshotBackupHistory",
    "PerfSnapshotQueryPlans",
    "PerfSnapshotConfig",
    "PerfSnapshotDeadlocks",
];

/// Child rows by their run's key; each key's rows sorted.
pub type ChildSet = BTreeMap<(i32, i64), Vec<String>>;

/// One value as canonical text: integers and booleans as written, decimals as
/// `mantissa e-scale`, times as epoch ms, text quoted, binary as `0x` hex, a variant as its
/// quoted base type and value, NULL as `NULL`.
pub fn canon(a: &ArrayRef, r: usize) -> String {
    if a.is_null(r) {
        return "NULL".into();
    }
    match a.data_type() {
        DataType::Int64 => a.as_primitive::<Int64Type>().value(r).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(r).to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(r).to_string(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(r).to_string(),
        DataType::Boolean => a.as_boolean().value(r).to_string(),
        DataType::Decimal128(_, s) => format!("{}e-{s}", a.as_primitive::<Decimal128Type>().value(r)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a.as_primitive::<TimestampMillisecondType>().value(r).to_string(),
        DataType::Utf8 => format!("{:?}", a.as_string::<i32>().value(r)),
        DataType::Binary => format!("0x{}", hex(a.as_binary::<i32>().value(r))),
        DataType::FixedSizeBinary(_) => format!("0x{}", hex(a.as_fixed_size_binary().value(r))),
        // SQL_VARIANT: base type and value text.
        DataType::Struct(_) => {
            let v = a.as_struct();
            format!("{:?}:{:?}", v.column(0).as_string::<i32>().value(r), v.column(1).as_string::<i32>().value(r))
        }
        t => panic!("type {t} in a child table"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Row `r`'s columns `cols` as one canonical string.
pub fn canon_row(b: &RecordBatch, cols: &[usize], r: usize) -> String {
    cols.iter().map(|&c| canon(b.column(c), r)).collect::<Vec<_>>().join("|")
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

/// Child rows per PerfSnapshotRunID of an export's `NAME/<table>.parquet`.
pub fn children_per_run(run_file: &Path, table: &str) -> BTreeMap<i64, u64> {
    let path = child_file(run_file, table);
    let mut out = BTreeMap::new();
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["PerfSnapshotRunID"]);
    for b in builder.with_projection(mask).build().unwrap() {
        for id in b.unwrap().column(0).as_primitive::<Int64Type>().values() {
            *out.entry(*id).or_insert(0) += 1;
        }
    }
    out
}

/// Rows in the committed files of `STAGE/<table>/` (Parquet footers).
pub fn staged_rows(stage: &Path, table: &str) -> u64 {
    super::walk_files(&stage.join(table))
        .iter()
        .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".parquet") && !n.starts_with('.')))
        .map(|f| SerializedFileReader::new(File::open(f).unwrap()).unwrap().metadata().file_metadata().num_rows() as u64)
        .sum()
}

/// Child rows of `table` in the exports of `dir` (`*.parquet` in name order) counted once per
/// distinct snapshot (ServerName, SnapshotUTC): a restored copy's runs have the same children
/// as the originals, so a consolidated stage holds this many whichever run survives.
pub fn distinct_snapshot_children(dir: &Path, table: &str) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut want = 0;
    for f in super::parquet_files(dir) {
        let kids = children_per_run(&f, table);
        for r in super::read_source(&f) {
            if seen.insert((fold(&r.server_name), r.snapshot_ms)) {
                want += kids.get(&r.run_id).copied().unwrap_or(0);
            }
        }
    }
    want
}

/// An export's child file `NAME/<Table>.parquet`: rows by PerfSnapshotRunID, with the names of
/// its value columns (`<Table>ID` left out).
pub fn export_rows(run_file: &Path, table: &str) -> (Vec<String>, BTreeMap<i64, Vec<String>>) {
    let path = child_file(run_file, table);
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut names = Vec::new();
    for b in batches(&path) {
        let schema = b.schema();
        let run = schema.index_of("PerfSnapshotRunID").unwrap();
        let cols: Vec<usize> = (0..b.num_columns()).filter(|&c| c != run && schema.field(c).name() != &format!("{table}ID")).collect();
        names = cols.iter().map(|&c| schema.field(c).name().clone()).collect();
        let ids = b.column(run).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            out.entry(ids.value(r)).or_default().push(canon_row(&b, &cols, r));
        }
    }
    out.values_mut().for_each(|v| v.sort());
    (names, out)
}

/// `NAME/<Table>.parquet` beside `NAME.parquet`.
pub fn child_file(run_file: &Path, table: &str) -> PathBuf {
    run_file.with_file_name(run_file.file_stem().unwrap()).join(format!("{table}.parquet"))
}

/// The model: each key of `keys` gets the children of its surviving source row (lowest
/// source rank, then lowest run ID: the survivor rule of tests/common), from that source's
/// export of `table`. `sources`: (its rows, its export file), in rank order.
pub fn model(sources: &[(Vec<SrcRow>, PathBuf)], reg: &NameMap, keys: impl IntoIterator<Item = (i32, i64)>, table: &str) -> ChildSet {
    let mut best: BTreeMap<(i32, i64), (usize, i64)> = BTreeMap::new();
    for (s, (rows, _)) in sources.iter().enumerate() {
        for r in rows {
            let key = (reg[&fold(&r.server_name)], r.snapshot_ms);
            if best.get(&key).is_none_or(|b| (s, r.run_id) < *b) {
                best.insert(key, (s, r.run_id));
            }
        }
    }
    let exported: Vec<BTreeMap<i64, Vec<String>>> = sources.iter().map(|(_, f)| export_rows(f, table).1).collect();
    let mut out = ChildSet::new();
    for key in keys {
        let (s, run) = best[&key];
        if let Some(kids) = exported[s].get(&run) {
            out.insert(key, kids.clone());
        }
    }
    out
}

/// A stage's child rows of `table` (`STAGE/<Table>/ServerID=<id>/*.parquet`, keyed files).
pub fn stage_rows(stage: &Path, table: &str) -> ChildSet {
    let mut out = ChildSet::new();
    let dir = stage.join(table);
    if !dir.exists() {
        return out;
    }
    for f in super::walk_files(&dir) {
        let name = f.file_name().unwrap().to_str().unwrap();
        if !name.ends_with(".parquet") || name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        for b in batches(&f) {
            let servers = b.column(1).as_primitive::<Int32Type>().clone();
            let cols: Vec<usize> = (2..b.num_columns()).collect();
            for r in 0..b.num_rows() {
                out.entry((servers.value(r), ms(b.column(0), r))).or_default().push(canon_row(&b, &cols, r));
            }
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// A target table read as Arrow (`<Table>ID`, PerfSnapshotRunID, values) by its run's key,
/// given MonitoringDB's runs as Arrow; rows whose run the target lacks are counted, not kept.
pub fn target_rows(runs: &RecordBatch, rows: &RecordBatch) -> (ChildSet, usize) {
    let idx = |b: &RecordBatch, n: &str| b.schema().index_of(n).unwrap();
    let ids = runs.column(idx(runs, "PerfSnapshotRunID")).as_primitive::<Int64Type>().clone();
    let servers = runs.column(idx(runs, "ServerID")).as_primitive::<Int32Type>().clone();
    let ts = runs.column(idx(runs, "SnapshotUTC")).clone();
    let key_of: BTreeMap<i64, (i32, i64)> = (0..runs.num_rows()).map(|r| (ids.value(r), (servers.value(r), ms(&ts, r)))).collect();
    let run = rows.column(idx(rows, "PerfSnapshotRunID")).as_primitive::<Int64Type>().clone();
    let cols: Vec<usize> = (2..rows.num_columns()).collect();
    let (mut out, mut orphans) = (ChildSet::new(), 0);
    for r in 0..rows.num_rows() {
        match key_of.get(&run.value(r)) {
            Some(k) => out.entry(*k).or_default().push(canon_row(rows, &cols, r)),
            None => orphans += 1,
        }
    }
    out.values_mut().for_each(|v| v.sort());
    (out, orphans)
}

/// `Err` describing how `got` differs from `want` (per-run multisets).
pub fn diff(what: &str, got: &ChildSet, want: &ChildSet) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let n = |c: &ChildSet| c.values().map(Vec::len).sum::<usize>();
    let missing = want.keys().filter(|k| !got.contains_key(k)).count();
    let extra = got.keys().filter(|k| !want.contains_key(k)).count();
    let differ = want.iter().filter(|(k, v)| got.get(k).is_some_and(|g| g != *v)).count();
    let example = want.iter().find(|(k, v)| got.get(k).is_some_and(|g| g != *v)).map(|(k, v)| {
        let g = &got[k];
        let (w1, g1) = v.iter().zip(g).find(|(a, b)| a != b).map(|(a, b)| (a.clone(), b.clone())).unwrap_or_default();
        format!("; e.g. run {k:?}: wanted {w1} got {g1}")
    });
    Err(format!("{what}: {} child rows vs {} wanted: runs {missing} missing, {extra} unexpected, {differ} differing{}", n(got), n(want), example.unwrap_or_default()))
}

/// `Err` when `part` holds a row `whole` does not (multiset inclusion per run).
pub fn within(what: &str, part: &ChildSet, whole: &ChildSet) -> Result<(), String> {
    for (k, rows) in part {
        let mut pool: BTreeMap<&String, usize> = BTreeMap::new();
        for r in whole.get(k).into_iter().flatten() {
            *pool.entry(r).or_default() += 1;
        }
        for r in rows {
            match pool.get_mut(r) {
                Some(n) if *n > 0 => *n -= 1,
                _ => return Err(format!("{what}: run {k:?} holds a child row the uninterrupted run does not (or holds it twice): {}", &r[..r.len().min(200)])),
            }
        }
    }
    Ok(())
}

/// The test server's Arrow form of SQL_VARIANT columns `cols` (the value's bytes as MS-TDS
/// 2.2.5.5.4 sends them without the length: base type, property count, properties, data) in
/// perfcopy's form, `Struct{base_type, value}`, decoded here for the integer base types the
/// generated tables use (INT1/INT2/INT4/INT8); another base type panics naming it.
pub fn variants_as_structs(b: &RecordBatch, cols: &[&str]) -> RecordBatch {
    use arrow::array::{StringArray, StructArray};
    use arrow::datatypes::{Field, Fields, Schema};
    let fields: Fields = vec![Field::new("base_type", DataType::Utf8, false), Field::new("value", DataType::Utf8, false)].into();
    let mut schema_fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = b.columns().to_vec();
    for name in cols {
        let i = b.schema().index_of(name).unwrap();
        let raw = b.column(i).as_binary::<i32>();
        let (mut base, mut value) = (Vec::new(), Vec::new());
        for r in 0..raw.len() {
            if raw.is_null(r) {
                base.push(String::new());
                value.push(String::new());
                continue;
            }
            let v = raw.value(r);
            let (t, data) = (v[0], &v[2 + v[1] as usize..]);
            let n = |len: usize| data[..len].iter().rev().fold(0i64, |acc, &x| (acc << 8) | i64::from(x));
            let (name, text) = match t {
                0x30 => ("tinyint", n(1).to_string()),
                0x34 => ("smallint", (n(2) as i16).to_string()),
                0x38 => ("int", (n(4) as i32).to_string()),
                0x7F => ("bigint", n(8).to_string()),
                t => panic!("{name}: variant base type 0x{t:02X} not decoded by the test"),
            };
            base.push(name.to_string());
            value.push(text);
        }
        let nulls = arrow::buffer::NullBuffer::from((0..raw.len()).map(|r| raw.is_valid(r)).collect::<Vec<_>>());
        let children: Vec<ArrayRef> = vec![std::sync::Arc::new(StringArray::from(base)), std::sync::Arc::new(StringArray::from(value))];
        columns[i] = std::sync::Arc::new(StructArray::new(fields.clone(), children, Some(nulls)));
        schema_fields[i] = Field::new(*name, DataType::Struct(fields.clone()), true);
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(schema_fields)), columns).unwrap()
}
