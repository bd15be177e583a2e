//! Child tables follow their runs (issue 14): DBATools databases with child tables on a TDS test
//! server -> perfcopy -> a MonitoringDB and a stage. The expected children come from a plain
//! model here (the survivor rule of tests/common applied to runs, then each surviving run's own
//! children), never from perfcopy.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use common::mssql::*;
use common::*;
use tds_test_server::{Column, SqlType, TestServer};

/// A child row as the model sees it: its run's key and its values as text.
type Kids = BTreeMap<(i32, i64), Vec<String>>;

const WAITS: &str = "PerfSnapshotWaitStats";
const DBS: &str = "PerfSnapshotDB";

fn wait_columns() -> Vec<Column> {
    vec![
        Column::new("PerfSnapshotWaitStatsID", SqlType::BigInt, false).identity(),
        Column::new("PerfSnapshotRunID", SqlType::BigInt, false),
        Column::new("WaitType", SqlType::NVarChar(Some(120)), false),
        Column::new("WaitingTasksCount", SqlType::BigInt, true),
        Column::new("WaitTimeMs", SqlType::BigInt, true),
        Column::new("AvgWaitTimeMs", SqlType::Decimal { precision: 18, scale: 4 }, true),
    ]
}

fn db_columns() -> Vec<Column> {
    vec![
        Column::new("PerfSnapshotDBID", SqlType::BigInt, false).identity(),
        Column::new("PerfSnapshotRunID", SqlType::BigInt, false),
        Column::new("DatabaseID", SqlType::Int, false),
        Column::new("DatabaseName", SqlType::NVarChar(Some(128)), false),
        Column::new("IsReadOnly", SqlType::Bit, false),
        Column::new("TotalDataMB", SqlType::Decimal { precision: 18, scale: 2 }, true),
    ]
}

/// The child rows a source holds: per run, 0..=3 wait rows and 0..=2 database rows, values
/// from (seed, run ID, index); NULLs in every nullable column now and then.
#[derive(Debug, Clone, Default)]
struct ChildRows {
    /// (PerfSnapshotRunID, values as text, Arrow values)
    waits: Vec<(i64, String, (String, Option<i64>, Option<i64>, Option<i128>))>,
    dbs: Vec<(i64, String, (i32, String, bool, Option<i128>))>,
}

fn children_for(run_ids: impl IntoIterator<Item = i64>, seed: u64) -> ChildRows {
    let mut c = ChildRows::default();
    for id in run_ids {
        let h = mix(seed, id as u64);
        for i in 0..(h % 4) {
            let x = mix(h, i);
            let v = (format!("WAIT_{}_{}", x % 7, seed), (x % 3 != 0).then_some((x % 10_000) as i64), Some((x % 99_999) as i64), (x % 5 != 0).then_some((x % 1_000_000) as i128 - 500_000));
            c.waits.push((id, format!("{v:?}"), v));
        }
        for i in 0..(h % 3) {
            let x = mix(h, 100 + i);
            let v = ((x % 40) as i32, format!("db_{}_Ü{}", x % 11, seed), x % 2 == 0, (x % 4 != 0).then_some((x % 100_000_000) as i128));
            c.dbs.push((id, format!("{v:?}"), v));
        }
    }
    c
}

/// Creates the child tables in `db` and inserts `rows`.
fn seed_children(srv: &TestServer, db: &str, rows: &ChildRows) {
    if !srv.has_table(db, &format!("dbo.{WAITS}")) {
        srv.create_table(db, &format!("dbo.{WAITS}"), wait_columns(), &[&["PerfSnapshotWaitStatsID"]]).unwrap();
        srv.create_table(db, &format!("dbo.{DBS}"), db_columns(), &[&["PerfSnapshotDBID"]]).unwrap();
    }
    let w = &rows.waits;
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("PerfSnapshotRunID", DataType::Int64, false),
            Field::new("WaitType", DataType::Utf8, false),
            Field::new("WaitingTasksCount", DataType::Int64, true),
            Field::new("WaitTimeMs", DataType::Int64, true),
            Field::new("AvgWaitTimeMs", DataType::Decimal128(18, 4), true),
        ])),
        vec![
            Arc::new(Int64Array::from(w.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(w.iter().map(|r| r.2 .0.clone()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(w.iter().map(|r| r.2 .1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(w.iter().map(|r| r.2 .2).collect::<Vec<_>>())),
            Arc::new(Decimal128Array::from(w.iter().map(|r| r.2 .3).collect::<Vec<_>>()).with_precision_and_scale(18, 4).unwrap()),
        ],
    )
    .unwrap();
    srv.insert_batch(db, &format!("dbo.{WAITS}"), &b).unwrap();
    let d = &rows.dbs;
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("PerfSnapshotRunID", DataType::Int64, false),
            Field::new("DatabaseID", DataType::Int32, false),
            Field::new("DatabaseName", DataType::Utf8, false),
            Field::new("IsReadOnly", DataType::Boolean, false),
            Field::new("TotalDataMB", DataType::Decimal128(18, 2), true),
        ])),
        vec![
            Arc::new(Int64Array::from(d.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(d.iter().map(|r| r.2 .0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(d.iter().map(|r| r.2 .1.clone()).collect::<Vec<_>>())),
            Arc::new(BooleanArray::from(d.iter().map(|r| r.2 .2).collect::<Vec<_>>())),
            Arc::new(Decimal128Array::from(d.iter().map(|r| r.2 .3).collect::<Vec<_>>()).with_precision_and_scale(18, 2).unwrap()),
        ],
    )
    .unwrap();
    srv.insert_batch(db, &format!("dbo.{DBS}"), &b).unwrap();
}

/// Creates the child tables in MonitoringDB `db` (its own identities; no rows).
fn target_children_tables(srv: &TestServer, db: &str) {
    srv.create_table(db, &format!("dbo.{WAITS}"), wait_columns(), &[&["PerfSnapshotWaitStatsID"]]).unwrap();
    srv.create_table(db, &format!("dbo.{DBS}"), db_columns(), &[&["PerfSnapshotDBID"]]).unwrap();
}

/// Text of one value of an Arrow column, as the model writes it (`Some(..)`/`None` for
/// nullable ones).
fn cell(a: &ArrayRef, r: usize, nullable: bool) -> String {
    let v = if a.is_null(r) {
        return "None".into();
    } else {
        match a.data_type() {
            DataType::Int64 => format!("{}", a.as_primitive::<Int64Type>().value(r)),
            DataType::Int32 => format!("{}", a.as_primitive::<Int32Type>().value(r)),
            DataType::Boolean => format!("{}", a.as_boolean().value(r)),
            DataType::Utf8 => format!("{:?}", a.as_string::<i32>().value(r)),
            DataType::Decimal128(_, _) => format!("{}", a.as_primitive::<arrow::datatypes::Decimal128Type>().value(r)),
            t => panic!("type {t} in a child table"),
        }
    };
    if nullable { format!("Some({v})") } else { v }
}

/// A child batch's value columns (from `first`) as model text per row; which are nullable
/// follows the model's tuples.
fn texts(b: &RecordBatch, first: usize, nullable: &[bool]) -> Vec<String> {
    (0..b.num_rows())
        .map(|r| {
            let cells: Vec<String> = (first..b.num_columns()).map(|c| cell(b.column(c), r, nullable[c - first])).collect();
            format!("({})", cells.join(", "))
        })
        .collect()
}

const WAIT_NULLABLE: [bool; 4] = [false, true, true, true];
const DB_NULLABLE: [bool; 4] = [false, false, false, true];

/// MonitoringDB's child rows of `table`, by their run's key (through MonitoringDB's own run IDs).
fn target_kids(srv: &TestServer, db: &str, table: &str, nullable: &[bool]) -> Kids {
    let runs = srv.table_batch(db, "dbo.PerfSnapshotRun").unwrap();
    let idx = |b: &RecordBatch, n: &str| b.schema().index_of(n).unwrap();
    let ids = runs.column(idx(&runs, "PerfSnapshotRunID")).as_primitive::<Int64Type>().clone();
    let servers = runs.column(idx(&runs, "ServerID")).as_primitive::<Int32Type>().clone();
    let ts = runs.column(idx(&runs, "SnapshotUTC")).clone();
    let key_of: BTreeMap<i64, (i32, i64)> = (0..runs.num_rows()).map(|r| (ids.value(r), (servers.value(r), ms(&ts, r)))).collect();
    let b = srv.table_batch(db, &format!("dbo.{table}")).unwrap();
    let run = b.column(1).as_primitive::<Int64Type>().clone();
    let t = texts(&b, 2, nullable);
    let mut out = Kids::new();
    for (r, text) in t.into_iter().enumerate() {
        let key = *key_of.get(&run.value(r)).unwrap_or_else(|| panic!("{table}: row {r} references run {} that MonitoringDB lacks", run.value(r)));
        out.entry(key).or_default().push(text);
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// The stage's child rows of `table`, by key.
fn stage_kids(stage: &Path, table: &str, nullable: &[bool]) -> Kids {
    let mut out = Kids::new();
    let dir = stage.join(table);
    if !dir.exists() {
        return out;
    }
    let files: Vec<_> = walk_files(&dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    for f in files {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
        let part: i32 = f.parent().unwrap().file_name().unwrap().to_str().unwrap().strip_prefix("ServerID=").unwrap().parse().unwrap();
        for b in r {
            let b = b.unwrap();
            let servers = b.column(1).as_primitive::<Int32Type>();
            for (r, text) in texts(&b, 2, nullable).into_iter().enumerate() {
                assert_eq!(servers.value(r), part, "{}: row in the wrong partition", f.display());
                out.entry((part, ms(b.column(0), r))).or_default().push(text);
            }
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// The model: each surviving run (lowest source rank, then run ID, as tests/common's survivor
/// rule; a run the target held before keeps what it had) brings its own children; others bring
/// none.
fn expected_kids(sources: &[(Vec<SrcRow>, ChildRows)], map: &NameMap, held: &BTreeMap<(i32, i64), ()>, table: &str) -> Kids {
    let mut best: BTreeMap<(i32, i64), (usize, i64)> = BTreeMap::new();
    for (s, (rows, _)) in sources.iter().enumerate() {
        for r in rows {
            let key = (*map.get(&fold(&r.server_name)).unwrap(), r.snapshot_ms);
            if held.contains_key(&key) {
                continue;
            }
            let rank = (s, r.run_id);
            if best.get(&key).is_none_or(|b| rank < *b) {
                best.insert(key, rank);
            }
        }
    }
    let mut out = Kids::new();
    for (key, (s, run)) in best {
        let kids: Vec<String> = match table {
            WAITS => sources[s].1.waits.iter().filter(|w| w.0 == run).map(|w| w.1.clone()).collect(),
            _ => sources[s].1.dbs.iter().filter(|d| d.0 == run).map(|d| d.1.clone()).collect(),
        };
        if !kids.is_empty() {
            let mut kids = kids;
            kids.sort();
            out.insert(key, kids);
        }
    }
    out
}

fn assert_kids_eq(what: &str, got: &Kids, want: &Kids) {
    let n_got: usize = got.values().map(Vec::len).sum();
    let n_want: usize = want.values().map(Vec::len).sum();
    for (k, w) in want {
        assert_eq!(got.get(k), Some(w), "{what}: children of run {k:?} differ");
    }
    for k in got.keys() {
        assert!(want.contains_key(k), "{what}: children of run {k:?} that the model does not have: {:?}", got[k]);
    }
    assert_eq!(n_got, n_want, "{what}: child row count");
}

/// The `children` report of source `s` as (table -> [read, written, dropped, orphans]).
fn child_report(report: &serde_json::Value, s: usize) -> BTreeMap<String, [u64; 4]> {
    report["sources"][s]["children"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let n = |f: &str| c[f].as_u64().unwrap();
                    (c["table"].as_str().unwrap().to_string(), [n("rows_read"), n("rows_written"), n("dropped_with_run"), n("orphans")])
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Two DBATools databases with child tables: SQL01's own runs in A; in B a copy of part of
/// SQL01's history (other run IDs, other children) and SQL02's runs; orphans in A (a run ID
/// below every run, one above) and in B (inside its ID range).
fn two_sources(srv: &TestServer, dir: &Path) -> Vec<(Vec<SrcRow>, ChildRows)> {
    let a = series("SQL01", T0, 60, 1, 1);
    let mut b = copy_rows(&a[20..45], 500, 0, None);
    b.extend(series("SQL02", T0, 30, 600, 2));
    let mut ka = children_for(a.iter().map(|r| r.run_id), 11);
    let kb = children_for(b.iter().map(|r| r.run_id), 22);
    seed(srv, dir, "DBATools_A", &a, true);
    seed(srv, dir, "DBATools_B", &b, true);
    // Orphans: run 0 and run 10_000 are not in A; run 550 is not in B (between its two series).
    let orphans_a = children_for([0, 10_000], 33);
    let orphans_b = children_for([550, 551, 552], 44);
    ka.waits.extend(orphans_a.waits.iter().cloned());
    ka.dbs.extend(orphans_a.dbs.iter().cloned());
    seed_children(srv, "DBATools_A", &ka);
    let mut kb_all = kb.clone();
    kb_all.waits.extend(orphans_b.waits.iter().cloned());
    kb_all.dbs.extend(orphans_b.dbs.iter().cloned());
    seed_children(srv, "DBATools_B", &kb_all);
    // The model's children are the real ones only (orphans never land).
    ka.waits.retain(|w| w.0 != 0 && w.0 != 10_000);
    ka.dbs.retain(|d| d.0 != 0 && d.0 != 10_000);
    assert!(!orphans_a.waits.is_empty() || !orphans_a.dbs.is_empty(), "the test needs orphans");
    vec![(a, ka), (b, kb)]
}

fn orphans_of(sources_rows: &[(Vec<SrcRow>, ChildRows)], s: usize, srv: &TestServer, db: &str, table: &str) -> u64 {
    let all = srv.table_batch(db, &format!("dbo.{table}")).unwrap();
    let run_ids: std::collections::BTreeSet<i64> = sources_rows[s].0.iter().map(|r| r.run_id).collect();
    let runs = all.column(1).as_primitive::<Int64Type>();
    runs.values().iter().filter(|id| !run_ids.contains(id)).count() as u64
}

#[test]
fn children_follow_their_runs_into_monitoringdb_and_the_stage_and_a_rerun_adds_none() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let sources = two_sources(&srv, dir.path());
    let from = [conn(&srv, "DBATools_A"), conn(&srv, "DBATools_B")];

    // Each target twice: with the default unit bound (a batch's runs in one unit), and with
    // one run per unit (PERFCOPY_TEST_CHILD_UNIT_BYTES=1), as wide child rows make them.
    for (target, unit_bytes, n) in [("mssql", None, 1), ("stage", None, 1), ("mssql", Some("1"), 2), ("stage", Some("1"), 2)] {
        let (db, stage) = (format!("MonitoringDB{n}"), dir.path().join(format!("stage{n}")));
        if target == "mssql" {
            srv.create_monitoringdb(&db);
            target_children_tables(&srv, &db);
        }
        let env: Vec<(&str, &str)> = unit_bytes.map(|b| ("PERFCOPY_TEST_CHILD_UNIT_BYTES", b)).into_iter().collect();
        let what = format!("{target} (unit bytes {unit_bytes:?})");
        let to_conn = conn(&srv, &db);
        let to: Vec<&str> = if target == "mssql" { vec!["--to", &to_conn, "--register-servers"] } else { vec!["--stage", s(&stage), "--register-servers"] };
        let mut args = vec!["copy", "--json", "--from", &from[0], "--from", &from[1]];
        args.extend(&to);
        let report = ok_json(&perfcopy_env(&args, &env));
        let map: NameMap = if target == "mssql" { servers_table(&srv, &db) } else { read_registry(&stage.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect() };
        let got_kids = |table: &str, nullable: &[bool]| if target == "mssql" { target_kids(&srv, &db, table, nullable) } else { stage_kids(&stage, table, nullable) };
        for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
            let want = expected_kids(&sources, &map, &BTreeMap::new(), table);
            assert_kids_eq(&format!("{what} {table}"), &got_kids(table, nullable), &want);
            // Per source: what was read, written, dropped with a duplicate run, orphaned.
            for (i, src_db) in ["DBATools_A", "DBATools_B"].iter().enumerate() {
                let rep = child_report(&report, i)[table];
                let total = srv.row_count(src_db, &format!("dbo.{table}")).unwrap() as u64;
                let orphans = orphans_of(&sources, i, &srv, src_db, table);
                assert_eq!(rep[0], total, "{what} {src_db} {table}: rows read");
                assert_eq!(rep[3], orphans, "{what} {src_db} {table}: orphans");
                assert_eq!(rep[1] + rep[2] + rep[3], total, "{what} {src_db} {table}: every row accounted for");
            }
            let written: u64 = (0..2).map(|i| child_report(&report, i)[table][1]).sum();
            assert_eq!(written as usize, want.values().map(Vec::len).sum::<usize>(), "{what} {table}: rows written");
        }
        assert!(child_report(&report, 1)[WAITS][2] > 0, "B's copies of A's runs drop their children");
        let (batches, units) = (report["stages"]["batches"].as_u64().unwrap(), report["stages"]["units"].as_u64().unwrap());
        let runs_read: u64 = sources.iter().map(|(r, _)| r.len() as u64).sum();
        if unit_bytes.is_some() {
            // One run per unit, after each source's first unit (16 runs, before its bytes per
            // run are known).
            assert!(units >= runs_read - 2 * 15, "{what}: {units} units for {runs_read} runs ({batches} batches)");
        } else {
            assert!(units < runs_read / 2, "{what}: {units} units for {runs_read} runs");
        }

        // A re-run writes no run and no child row.
        let again = ok_json(&perfcopy_env(&args, &env));
        for i in 0..2 {
            assert_eq!(again["sources"][i]["rows_written"].as_u64(), Some(0));
            for (t, n) in child_report(&again, i) {
                assert_eq!(n[1], 0, "{what} re-run: {t} rows written");
            }
        }
        for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
            let want = expected_kids(&sources, &map, &BTreeMap::new(), table);
            assert_kids_eq(&format!("{what} {table} after a re-run"), &got_kids(table, nullable), &want);
        }
    }
}

#[test]
fn new_runs_bring_their_children_on_an_incremental_copy() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 30, 1, 5);
    let ka = children_for(a.iter().map(|r| r.run_id), 55);
    seed(&srv, dir.path(), "DBATools", &a, true);
    seed_children(&srv, "DBATools", &ka);
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let (from, to) = (conn(&srv, "DBATools"), conn(&srv, "MonitoringDB"));
    copy_json(&["--from", &from, "--to", &to, "--register-servers"]);
    // More runs with children, then an incremental copy (the watermark is used).
    let more = series("SQL01", T0 + 30 * MIN5, 20, 31, 6);
    let km = children_for(more.iter().map(|r| r.run_id), 66);
    add_rows(&srv, dir.path(), "DBATools", &more, true);
    seed_children(&srv, "DBATools", &km);
    let report = copy_json(&["--from", &from, "--to", &to]);
    assert_eq!(report["sources"][0]["watermark"]["status"], "used", "{report}");
    let mut all = a.clone();
    all.extend(more);
    let mut kids = ka;
    kids.waits.extend(km.waits);
    kids.dbs.extend(km.dbs);
    let map = servers_table(&srv, "MonitoringDB");
    for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
        let want = expected_kids(&[(all.clone(), kids.clone())], &map, &BTreeMap::new(), table);
        assert_kids_eq(table, &target_kids(&srv, "MonitoringDB", table, nullable), &want);
    }
}

#[test]
fn which_tables_move_runs_only_tables_and_missing_target_tables() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 20, 1, 7);
    let ka = children_for(a.iter().map(|r| r.run_id), 77);
    seed(&srv, dir.path(), "DBATools", &a, true);
    seed_children(&srv, "DBATools", &ka);
    let from = conn(&srv, "DBATools");

    // The target has no child tables: by default they are skipped with a message.
    srv.create_monitoringdb("M1");
    let to = conn(&srv, "M1");
    let o = perfcopy(&["copy", "--from", &from, "--to", &to, "--register-servers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The summary wraps its lines at 80 columns: compare with the line breaks as spaces.
    let said = stderr(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(said.contains(&format!("has no table dbo.{WAITS}; its rows are not copied")), "{}", stderr(&o));
    assert_eq!(srv.row_count("M1", "dbo.PerfSnapshotRun").unwrap(), 20);

    // Named with --tables, a missing table is an error, and nothing is written.
    srv.create_monitoringdb("M2");
    let to = conn(&srv, "M2");
    let o = perfcopy(&["copy", "--from", &from, "--to", &to, "--register-servers", "--tables", WAITS]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("has no table dbo.{WAITS} (add --create-missing-tables")), "{}", stderr(&o));
    assert_eq!(srv.row_count("M2", "dbo.PerfSnapshotRun").unwrap(), 0);
    // A table no source has is a usage error.
    let o = perfcopy(&["copy", "--from", &from, "--to", &to, "--register-servers", "--tables", "PerfSnapshotNope"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--tables: no source has a child table 'PerfSnapshotNope'"), "{}", stderr(&o));

    // --create-missing-tables creates it from the source's columns; --tables keeps the other out.
    let report = copy_json(&["--from", &from, "--to", &to, "--register-servers", "--tables", WAITS, "--create-missing-tables"]);
    assert!(srv.has_table("M2", &format!("dbo.{WAITS}")) && !srv.has_table("M2", &format!("dbo.{DBS}")));
    assert_eq!(child_report(&report, 0).keys().collect::<Vec<_>>(), vec![WAITS]);
    let map = servers_table(&srv, "M2");
    let want = expected_kids(&[(a.clone(), ka.clone())], &map, &BTreeMap::new(), WAITS);
    assert_kids_eq("created table", &target_kids(&srv, "M2", WAITS, &WAIT_NULLABLE), &want);

    // --runs-only moves PerfSnapshotRun alone.
    srv.create_monitoringdb("M3");
    target_children_tables(&srv, "M3");
    let to = conn(&srv, "M3");
    let report = copy_json(&["--from", &from, "--to", &to, "--register-servers", "--runs-only"]);
    assert!(child_report(&report, 0).is_empty());
    assert_eq!(srv.row_count("M3", &format!("dbo.{WAITS}")).unwrap(), 0);
    assert_eq!(srv.row_count("M3", "dbo.PerfSnapshotRun").unwrap(), 20);
}

#[test]
fn a_target_child_table_that_cannot_take_the_values_is_refused_before_anything_is_written() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 10, 1, 8);
    seed(&srv, dir.path(), "DBATools", &a, true);
    seed_children(&srv, "DBATools", &children_for(a.iter().map(|r| r.run_id), 88));
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    // The target's WaitType is narrower than the source's.
    let mut narrow = wait_columns();
    narrow[2] = Column::new("WaitType", SqlType::NVarChar(Some(60)), false);
    srv.create_table("MonitoringDB", &format!("dbo.{WAITS}"), narrow, &[]).unwrap();
    let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools"), "--to", &conn(&srv, "MonitoringDB"), "--register-servers"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("dbo.{WAITS}.WaitType is nvarchar(60)")), "{}", stderr(&o));
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
    assert!(servers_table(&srv, "MonitoringDB").is_empty(), "no server registered");
}

/// A target child table with a column no source has: refused at plan time, naming the table
/// and the column, when the column is NOT NULL without a default (no row could be loaded);
/// loaded when it is nullable or has a default. The bug this guards: the copy got as far as
/// the bulk load and failed there.
#[test]
fn a_target_child_column_the_sources_cannot_fill_is_refused_before_anything_is_written() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 10, 1, 9);
    seed(&srv, dir.path(), "DBATools", &a, true);
    let kids = children_for(a.iter().map(|r| r.run_id), 89);
    seed_children(&srv, "DBATools", &kids);
    let with_extra = |db: &str, extra: Column| {
        srv.create_monitoringdb(db);
        target_children_tables(&srv, db);
        let mut cols = wait_columns();
        cols.push(extra);
        srv.create_table(db, &format!("dbo.{WAITS}"), cols, &[]).unwrap();
    };
    with_extra("M1", Column::new("CollectorHost", SqlType::NVarChar(Some(60)), false));
    let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools"), "--to", &conn(&srv, "M1"), "--register-servers"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("dbo.{WAITS}.CollectorHost is NOT NULL without a default")), "{}", stderr(&o));
    assert_eq!(srv.row_count("M1", "dbo.PerfSnapshotRun").unwrap(), 0);
    assert!(servers_table(&srv, "M1").is_empty(), "no server registered");

    // Nullable, or NOT NULL with a default: loaded, the column left to the server.
    with_extra("M2", Column::new("CollectorHost", SqlType::NVarChar(Some(60)), true));
    with_extra("M3", Column::new("Imported", SqlType::Bit, false).default(tds_test_server::ColumnDefault::Value(tds_test_server::Value::Bool(true))));
    for db in ["M2", "M3"] {
        let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools"), "--to", &conn(&srv, db), "--register-servers"]);
        assert!(o.status.success(), "{db}: {}", stderr(&o));
        assert_eq!(srv.row_count(db, &format!("dbo.{WAITS}")).unwrap(), kids.waits.len(), "{db}");
    }
}

/// The target's children of `table` before a copy, as model rows (for runs it held).
fn held_runs(srv: &TestServer, db: &str) -> BTreeMap<(i32, i64), ()> {
    target_rows(srv, db).keys().map(|k| (*k, ())).collect()
}

/// The model of completing: runs the target held get a table's children from the best source
/// row of their key only if the target held none of that table's rows for them.
fn completed(before: &Kids, sources: &[(Vec<SrcRow>, ChildRows)], map: &NameMap, held: &BTreeMap<(i32, i64), ()>, table: &str) -> Kids {
    // Without the target, these would have survived: their children complete held runs.
    let mut want = expected_kids(sources, map, &BTreeMap::new(), table);
    want.retain(|k, _| !held.contains_key(k) || !before.contains_key(k));
    for (k, v) in before {
        want.insert(*k, v.clone());
    }
    want
}

#[test]
fn runs_the_target_holds_without_a_tables_children_are_completed_once() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let sources = two_sources(&srv, dir.path());
    let from = [conn(&srv, "DBATools_A"), conn(&srv, "DBATools_B")];
    let stage = dir.path().join("stage");
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let to = conn(&srv, "MonitoringDB");
    for target in ["mssql", "stage"] {
        let tgt: Vec<&str> = if target == "mssql" { vec!["--to", &to] } else { vec!["--stage", s(&stage)] };
        let with = |extra: &[&str]| {
            let mut a = vec!["--from", &from[0], "--from", &from[1], "--register-servers"];
            a.extend(&tgt);
            a.extend(extra);
            copy_json(&a)
        };
        // A run-only load of A's first half (as the toolkit's run-only procedure leaves it),
        // then the wait stats of a few runs from somewhere else.
        let mut a_only = vec!["--from", &from[0], "--register-servers", "--runs-only", "--until", "2024-03-01T02:00:00Z"];
        a_only.extend(&tgt);
        copy_json(&a_only);
        let held: BTreeMap<(i32, i64), ()> = if target == "mssql" { held_runs(&srv, "MonitoringDB") } else { read_stage(&stage).iter().map(|r| ((r.server_id, r.snapshot_ms), ())).collect() };
        assert!(!held.is_empty());
        // Every held run gets its children; a re-read (--rescan: the run-only copy's watermark
        // says nothing of child tables) completes them, and reads twice double nothing.
        with(&["--rescan"]);
        let report = with(&["--rescan"]);
        let map: NameMap = if target == "mssql" { servers_table(&srv, "MonitoringDB") } else { read_registry(&stage.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect() };
        for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
            let want = completed(&Kids::new(), &sources, &map, &held, table);
            let got = if target == "mssql" { target_kids(&srv, "MonitoringDB", table, nullable) } else { stage_kids(&stage, table, nullable) };
            assert_kids_eq(&format!("{target} {table} completed"), &got, &want);
        }
        assert!(child_report(&report, 0)[WAITS][1] == 0, "the second re-read wrote no children");
    }
}

/// The bug this guards: after a `--runs-only` copy, a copy with child tables resumed after
/// the runs-only watermark, so the runs it had skipped never got their children. A watermark
/// records the child tables copied with it; a copy of a table it does not cover reads whole
/// (the held runs are completed), and a copy of fewer tables uses it.
#[test]
fn a_runs_only_watermark_does_not_skip_the_children_of_a_later_copy() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 40, 1, 10);
    let ka = children_for(a.iter().map(|r| r.run_id), 101);
    seed(&srv, dir.path(), "DBATools", &a, true);
    seed_children(&srv, "DBATools", &ka);
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let (from, to) = (conn(&srv, "DBATools"), conn(&srv, "MonitoringDB"));
    let stage = dir.path().join("stage");
    for target in ["mssql", "stage"] {
        let copy = |extra: &[&str]| {
            let mut args = vec!["--from", from.as_str(), "--register-servers"];
            if target == "mssql" {
                args.extend(["--to", to.as_str()]);
            } else {
                args.extend(["--stage", s(&stage)]);
            }
            args.extend(extra);
            copy_json(&args)
        };
        let r = copy(&["--runs-only"]);
        assert_eq!(report_totals(&r).rows_written, 40, "{r}");
        let r = copy(&[]);
        let w = &r["sources"][0]["watermark"];
        assert_eq!(w["status"], "set_aside", "{target}: {r}");
        assert!(w["reason"].as_str().unwrap().contains("PerfSnapshotDB, PerfSnapshotWaitStats were not copied with the runs up to row 40"), "{target}: {w}");
        let map: NameMap = if target == "mssql" { servers_table(&srv, "MonitoringDB") } else { read_registry(&stage.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect() };
        for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
            let want = expected_kids(&[(a.clone(), ka.clone())], &map, &BTreeMap::new(), table);
            let got = if target == "mssql" { target_kids(&srv, "MonitoringDB", table, nullable) } else { stage_kids(&stage, table, nullable) };
            assert_kids_eq(&format!("{target} {table} after the runs-only copy"), &got, &want);
        }
        // Now the watermark covers both tables: a re-run, and a copy of one of them, use it.
        for extra in [&[][..], &["--tables", WAITS][..]] {
            let r = copy(extra);
            assert_eq!(r["sources"][0]["watermark"]["status"], "used", "{target} {extra:?}: {r}");
            assert_eq!(report_totals(&r).rows_read, 0);
        }
    }
}

#[test]
fn a_run_with_some_of_a_tables_children_keeps_exactly_those() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 12, 1, 9);
    let ka = children_for(a.iter().map(|r| r.run_id), 99);
    seed(&srv, dir.path(), "DBATools", &a, true);
    seed_children(&srv, "DBATools", &ka);
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let (from, to) = (conn(&srv, "DBATools"), conn(&srv, "MonitoringDB"));
    copy_json(&["--from", &from, "--to", &to, "--register-servers", "--runs-only"]);
    // Someone loaded one wait row for each of the first three runs that have wait rows.
    let runs = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
    let ids = runs.column(runs.schema().index_of("PerfSnapshotRunID").unwrap()).as_primitive::<Int64Type>().values().to_vec();
    let mut partial = ChildRows::default();
    let with_waits: Vec<i64> = a.iter().filter(|r| ka.waits.iter().any(|w| w.0 == r.run_id)).take(3).map(|r| r.run_id).collect();
    for (i, run) in with_waits.iter().enumerate() {
        let v = (format!("HAND_{i}"), None, Some(1), None);
        // Source run IDs 1..=12 were loaded in order, so MonitoringDB's IDs follow them.
        partial.waits.push((ids[(*run - 1) as usize], format!("{v:?}"), v));
    }
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("PerfSnapshotRunID", DataType::Int64, false),
            Field::new("WaitType", DataType::Utf8, false),
            Field::new("WaitTimeMs", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(partial.waits.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(partial.waits.iter().map(|r| r.2 .0.clone()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(partial.waits.iter().map(|r| r.2 .2).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    srv.insert_batch("MonitoringDB", &format!("dbo.{WAITS}"), &b).unwrap();
    let before = target_kids(&srv, "MonitoringDB", WAITS, &WAIT_NULLABLE);
    assert_eq!(before.len(), 3);
    let held = held_runs(&srv, "MonitoringDB");
    copy_json(&["--from", &from, "--to", &to, "--rescan"]);
    let map = servers_table(&srv, "MonitoringDB");
    let srcs = vec![(a, ka)];
    assert_kids_eq("waits", &target_kids(&srv, "MonitoringDB", WAITS, &WAIT_NULLABLE), &completed(&before, &srcs, &map, &held, WAITS));
    assert_kids_eq("dbs", &target_kids(&srv, "MonitoringDB", DBS, &DB_NULLABLE), &completed(&Kids::new(), &srcs, &map, &held, DBS));
}

#[test]
fn a_stage_loads_into_monitoringdb_with_its_child_tables() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let sources = two_sources(&srv, dir.path());
    let stage = dir.path().join("stage");
    let from = [conn(&srv, "DBATools_A"), conn(&srv, "DBATools_B")];
    copy_json(&["--from", &from[0], "--from", &from[1], "--stage", s(&stage), "--register-servers"]);
    // The stage's child tables hold the parent's key and no source IDs, with their SQL types.
    let f = walk_files(&stage.join(WAITS)).into_iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
    let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["SnapshotUTC", "ServerID", "WaitType", "WaitingTasksCount", "WaitTimeMs", "AvgWaitTimeMs"]);
    assert_eq!(schema.field(2).metadata().get("perfcopy.sql_type").map(String::as_str), Some("NVARCHAR(120)"));

    // Into a MonitoringDB whose ServerIDs differ from the stage's: one server is known already.
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    seed_target(&srv, "MonitoringDB", &[("SQL02", 40)], &[]);
    let to = conn(&srv, "MonitoringDB");
    let report = copy_json(&["--from", s(&stage), "--to", &to, "--register-servers"]);
    let map = servers_table(&srv, "MonitoringDB");
    assert_eq!(map.get(&fold("SQL02")), Some(&40));
    for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
        let want = expected_kids(&sources, &map, &BTreeMap::new(), table);
        assert_kids_eq(&format!("stage -> MonitoringDB {table}"), &target_kids(&srv, "MonitoringDB", table, nullable), &want);
        let orphans: u64 = report["sources"].as_array().unwrap().iter().enumerate().map(|(i, _)| child_report(&report, i)[table][3]).sum();
        assert_eq!(orphans, 0, "a stage has no orphans");
    }
    // Loaded again: nothing more.
    copy_json(&["--from", s(&stage), "--to", &to]);
    for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
        let want = expected_kids(&sources, &map, &BTreeMap::new(), table);
        assert_kids_eq(&format!("stage -> MonitoringDB again {table}"), &target_kids(&srv, "MonitoringDB", table, nullable), &want);
    }
}

/// `verify --json`'s child checks as (table, ServerID) -> [source, target, missing, dups, differing].
fn verify_children(args: &[&str]) -> (Option<i32>, BTreeMap<(String, i32), [u64; 5]>, serde_json::Value) {
    let mut a = vec!["verify", "--json"];
    a.extend_from_slice(args);
    let o = perfcopy(&a);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text} {}", stderr(&o)));
    let m = v["children"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let n = |f: &str| c[f].as_u64().unwrap();
                    ((c["table"].as_str().unwrap().to_string(), c["server_id"].as_i64().unwrap() as i32), [n("source_rows"), n("target_rows"), n("missing"), n("duplicates"), n("differing_runs")])
                })
                .collect()
        })
        .unwrap_or_default();
    (o.status.code(), m, v)
}

#[test]
fn verify_compares_child_rows_per_table_and_server() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let sources = two_sources(&srv, dir.path());
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let from = [conn(&srv, "DBATools_A"), conn(&srv, "DBATools_B")];
    let to = conn(&srv, "MonitoringDB");
    let stage = dir.path().join("stage");
    copy_json(&["--from", &from[0], "--from", &from[1], "--to", &to, "--register-servers"]);
    copy_json(&["--from", &from[0], "--from", &from[1], "--stage", s(&stage), "--register-servers"]);
    let map = servers_table(&srv, "MonitoringDB");
    // The model's counts per (table, server).
    let want_counts = |map: &NameMap| -> BTreeMap<(String, i32), u64> {
        let mut m = BTreeMap::new();
        for t in [WAITS, DBS] {
            for ((server, _), kids) in expected_kids(&sources, map, &BTreeMap::new(), t) {
                *m.entry((t.to_string(), server)).or_insert(0) += kids.len() as u64;
            }
        }
        m
    };
    for (label, tgt) in [("mssql", vec!["--to", to.as_str()]), ("stage", vec!["--stage", s(&stage)])] {
        let mut args = vec!["--from", from[0].as_str(), "--from", from[1].as_str()];
        args.extend(&tgt);
        let (code, got, v) = verify_children(&args);
        assert_eq!(code, Some(0), "{label}: {v}");
        let m = if label == "mssql" { map.clone() } else { read_registry(&stage.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect() };
        let want = want_counts(&m);
        let counts: BTreeMap<(String, i32), u64> = got.iter().filter(|(_, v)| v[0] > 0).map(|(k, v)| (k.clone(), v[0])).collect();
        assert_eq!(counts, want.into_iter().filter(|(_, n)| *n > 0).collect(), "{label}: source child rows per table and server");
        for (k, c) in &got {
            assert_eq!(c[0], c[1], "{label} {k:?}: target rows");
            assert_eq!(&c[2..], &[0, 0, 0], "{label} {k:?}");
        }
    }

    // Break MonitoringDB: delete nothing (the test server has no DELETE for this), but add a
    // copy of one wait row and one row with other values to another run: verify names both.
    let b = srv.table_batch("MonitoringDB", &format!("dbo.{WAITS}")).unwrap();
    let keep: Vec<usize> = b.schema().fields().iter().enumerate().filter(|(_, f)| f.name() != "PerfSnapshotWaitStatsID").map(|(i, _)| i).collect();
    let b = b.project(&keep).unwrap();
    let first = b.slice(0, 1);
    srv.insert_batch("MonitoringDB", &format!("dbo.{WAITS}"), &first).unwrap();
    let runs = b.column(0).as_primitive::<Int64Type>();
    let other_run = runs.values().iter().copied().find(|&r| r != runs.value(0)).unwrap();
    let changed = RecordBatch::try_new(
        first.schema(),
        first.columns().iter().enumerate().map(|(i, c)| if i == 0 { Arc::new(Int64Array::from(vec![other_run])) as ArrayRef } else { c.clone() }).collect(),
    )
    .unwrap();
    srv.insert_batch("MonitoringDB", &format!("dbo.{WAITS}"), &changed).unwrap();
    let (code, got, v) = verify_children(&["--from", &from[0], "--from", &from[1], "--to", &to]);
    assert_eq!(code, Some(3), "{v}");
    let dups: u64 = got.iter().filter(|(k, _)| k.0 == WAITS).map(|(_, c)| c[3]).sum();
    assert_eq!(dups, 2, "two runs with a row too many: {v}");
    // --runs-only compares PerfSnapshotRun alone, which is whole.
    let (code, got, _) = verify_children(&["--from", &from[0], "--from", &from[1], "--to", &to, "--runs-only"]);
    assert_eq!(code, Some(0));
    assert!(got.is_empty());
}

#[test]
fn a_source_split_across_connections_moves_every_child_once() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let sources = two_sources(&srv, dir.path());
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let (a, b, to) = (conn(&srv, "DBATools_A"), conn(&srv, "DBATools_B"), conn(&srv, "MonitoringDB"));
    let report = copy_json(&["--from", &a, "--from", &b, "--to", &to, "--register-servers", "--source-connections", "3", "--batch-rows", "7"]);
    assert!(report["sources"].as_array().unwrap().len() > 2, "the sources were split: {report}");
    let map = servers_table(&srv, "MonitoringDB");
    for (table, nullable) in [(WAITS, &WAIT_NULLABLE[..]), (DBS, &DB_NULLABLE[..])] {
        assert_kids_eq(table, &target_kids(&srv, "MonitoringDB", table, nullable), &expected_kids(&sources, &map, &BTreeMap::new(), table));
        // Each orphan is counted once, by the part whose ID range holds it (the outer parts
        // are open-ended).
        let orphans: u64 = (0..report["sources"].as_array().unwrap().len()).map(|i| child_report(&report, i)[table][3]).sum();
        let want = orphans_of(&sources, 0, &srv, "DBATools_A", table) + orphans_of(&sources, 1, &srv, "DBATools_B", table);
        assert_eq!(orphans, want, "{table}: orphans");
    }
}

#[test]
fn child_tables_that_do_not_match_between_sources_are_refused_naming_source_table_and_column() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let a = series("SQL01", T0, 5, 1, 3);
    let b = series("SQL02", T0, 5, 1, 4);
    seed(&srv, dir.path(), "DBATools_A", &a, true);
    seed(&srv, dir.path(), "DBATools_B", &b, true);
    seed_children(&srv, "DBATools_A", &children_for(1..=5, 1));
    // B's wait stats lack the NOT NULL WaitType column.
    let mut cols = wait_columns();
    cols.remove(2);
    srv.create_table("DBATools_B", &format!("dbo.{WAITS}"), cols, &[]).unwrap();
    srv.create_table("DBATools_B", &format!("dbo.{DBS}"), db_columns(), &[]).unwrap();
    srv.create_monitoringdb("MonitoringDB");
    target_children_tables(&srv, "MonitoringDB");
    let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools_A"), "--from", &conn(&srv, "DBATools_B"), "--to", &conn(&srv, "MonitoringDB"), "--register-servers"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&label(&srv, "DBATools_B")) && err.contains(&format!("table dbo.{WAITS}: has no column WaitType")), "{err}");
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
    // A column another source's table lacks would be lost: refused too (B first now).
    let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools_B"), "--from", &conn(&srv, "DBATools_A"), "--to", &conn(&srv, "MonitoringDB"), "--register-servers"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("column WaitType is not in the first source's table of that name"), "{}", stderr(&o));
    // Leaving the table out works.
    copy_json(&["--from", &conn(&srv, "DBATools_A"), "--from", &conn(&srv, "DBATools_B"), "--to", &conn(&srv, "MonitoringDB"), "--register-servers", "--tables", DBS]);
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 10);
}

/// Writes the wait rows of `kids` as an export's `PerfSnapshotWaitStats.parquet`, the way
/// another tool writes it: plain Arrow types, no `perfcopy.sql_type` metadata (so WaitType is
/// text of undeclared length).
fn write_plain_wait_export(path: &Path, kids: &ChildRows) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("PerfSnapshotRunID", DataType::Int64, false),
        Field::new("WaitType", DataType::Utf8, false),
        Field::new("WaitingTasksCount", DataType::Int64, true),
        Field::new("WaitTimeMs", DataType::Int64, true),
        Field::new("AvgWaitTimeMs", DataType::Decimal128(18, 4), true),
    ]));
    let w = &kids.waits;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(w.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(w.iter().map(|r| r.2 .0.as_str()))),
            Arc::new(Int64Array::from_iter(w.iter().map(|r| r.2 .1))),
            Arc::new(Int64Array::from_iter(w.iter().map(|r| r.2 .2))),
            Arc::new(Decimal128Array::from_iter(w.iter().map(|r| r.2 .3)).with_precision_and_scale(18, 4).unwrap()),
        ],
    )
    .unwrap();
    let mut out = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    out.write(&batch).unwrap();
    out.close().unwrap();
}

/// A Parquet export written by another tool declares no text lengths: its text goes into the
/// target's NVARCHAR(120) column (directly, and through a stage, which keeps it undeclared),
/// each value checked as it is loaded. A value longer than the column stops the copy naming
/// the table and column, with nothing of it written.
#[test]
fn an_exports_text_without_declared_lengths_loads_into_shorter_columns_each_value_checked() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let rows = series("SQL01", T0, 40, 1, 1);
    let export = dir.path().join("SQL01.parquet");
    write_source(&export, &rows, &SourceOpts::default());
    let kids = children_for(rows.iter().map(|r| r.run_id), 9);
    assert!(!kids.waits.is_empty());
    write_plain_wait_export(&dir.path().join("SQL01").join(format!("{WAITS}.parquet")), &kids);
    let sources = vec![(rows.clone(), kids.clone())];

    // Straight in, and through a stage.
    let stage = dir.path().join("stage");
    copy_json(&["--from", s(&export), "--stage", s(&stage), "--register-servers", "--tables", WAITS]);
    for (db, from) in [("MonitoringDB", s(&export)), ("MonitoringDB2", s(&stage))] {
        srv.create_monitoringdb(db);
        target_children_tables(&srv, db);
        copy_json(&["--from", from, "--to", &conn(&srv, db), "--register-servers", "--tables", WAITS]);
        let want = expected_kids(&sources, &servers_table(&srv, db), &BTreeMap::new(), WAITS);
        assert_kids_eq(&format!("{from} -> {db}"), &target_kids(&srv, db, WAITS, &WAIT_NULLABLE), &want);
    }

    // With a DBATools source whose WaitType is NVARCHAR(120): the export's undeclared text
    // stands for it, and both sources' children arrive.
    let other = series("SQL02", T0, 25, 1, 2);
    seed(&srv, dir.path(), "DBATools_B", &other, true);
    let other_kids = children_for(other.iter().map(|r| r.run_id), 12);
    seed_children(&srv, "DBATools_B", &other_kids);
    let both = vec![(rows.clone(), kids.clone()), (other.clone(), other_kids.clone())];
    for (db, order) in [("MonitoringDB4", [0, 1]), ("MonitoringDB5", [1, 0])] {
        srv.create_monitoringdb(db);
        target_children_tables(&srv, db);
        let froms = [s(&export).to_string(), conn(&srv, "DBATools_B")];
        copy_json(&["--from", &froms[order[0]], "--from", &froms[order[1]], "--to", &conn(&srv, db), "--register-servers", "--tables", WAITS]);
        let ranked: Vec<_> = order.iter().map(|&i| both[i].clone()).collect();
        let want = expected_kids(&ranked, &servers_table(&srv, db), &BTreeMap::new(), WAITS);
        assert_kids_eq(&format!("export and DBATools -> {db}"), &target_kids(&srv, db, WAITS, &WAIT_NULLABLE), &want);
    }

    // One WaitType longer than the column's 120 characters.
    let mut long = kids.clone();
    long.waits[0].2 .0 = "W".repeat(121);
    let bad = dir.path().join("bad");
    let bad_export = bad.join("SQL01.parquet");
    std::fs::create_dir_all(&bad).unwrap();
    write_source(&bad_export, &rows, &SourceOpts::default());
    write_plain_wait_export(&bad.join("SQL01").join(format!("{WAITS}.parquet")), &long);
    srv.create_monitoringdb("MonitoringDB3");
    target_children_tables(&srv, "MonitoringDB3");
    let o = perfcopy(&["copy", "--from", s(&bad_export), "--to", &conn(&srv, "MonitoringDB3"), "--register-servers", "--tables", WAITS]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(WAITS) && err.contains("WaitType"), "{err}");
    assert_eq!(srv.row_count("MonitoringDB3", &format!("dbo.{WAITS}")).unwrap(), 0);
    assert_eq!(srv.row_count("MonitoringDB3", "dbo.PerfSnapshotRun").unwrap(), 0);
}
