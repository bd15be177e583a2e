//! Every type the DBATools child tables use, end to end over TDS (issue 14): BINARY(8),
//! VARBINARY(64) and VARBINARY(MAX), NVARCHAR(MAX), VARCHAR(n)/(MAX) in collations whose code
//! pages are not 1252 (Cyrillic cp1251, Greek cp1253), XML, DECIMAL(18,2)/(18,4), BIT NOT NULL,
//! DATETIME2(3) NULL and SQL_VARIANT of every base type the test server stores (uniqueidentifier
//! included). A DBATools
//! database on the TDS test server holds PerfSnapshotRun with PerfSnapshotQueryPlans, …Config,
//! …Deadlocks (SCHEMA.md) and a site's own table; `perfcopy copy` moves them into a
//! MonitoringDB, and into a stage and from there into another MonitoringDB. Each target's rows
//! are compared, value for value (a variant's base type and a VARCHAR's collation included),
//! with the rows this test built, keyed by their run's SnapshotUTC; never with what perfcopy or
//! the server report.

mod common;

use std::collections::BTreeMap;

use common::mssql::*;
use common::*;
use tds_test_server::types::{datetime_ticks, parse_datetime, EPOCH_TICKS};
use serde_json::{json, Value as Json};
use tds_test_server::{Collation, SqlType, TestServer, Value, Variant};

/// SCHEMA.md's child tables with these types, and a site's own table (VARCHAR(MAX) in Greek,
/// VARBINARY(MAX), DECIMAL(18,2), BIT NOT NULL), as the collector's DDL declares them.
const DDL: &str = "
CREATE TABLE dbo.PerfSnapshotQueryPlans (PerfSnapshotQueryPlansID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, PerfSnapshotRunID BIGINT NOT NULL,
  QueryHash BINARY(8) NULL, QueryPlanHash BINARY(8) NULL, DatabaseName SYSNAME NULL, SqlText NVARCHAR(MAX) NULL, ExecutionCount BIGINT NULL,
  AvgCpuMs DECIMAL(18,4) NULL, QueryPlanXML XML NULL, CaptureReason VARCHAR(50) COLLATE Cyrillic_General_CI_AS NULL);
CREATE NONCLUSTERED INDEX IX_QueryPlans_Run ON dbo.PerfSnapshotQueryPlans (PerfSnapshotRunID);
CREATE TABLE dbo.PerfSnapshotConfig (PerfSnapshotConfigID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, PerfSnapshotRunID BIGINT NOT NULL,
  ConfigurationID INT NOT NULL, ConfigName NVARCHAR(256) NOT NULL, ConfigValue SQL_VARIANT NULL, ConfigValueInUse SQL_VARIANT NULL,
  ConfigMinimum SQL_VARIANT NULL, ConfigMaximum SQL_VARIANT NULL, IsAdvanced BIT NULL, IsDynamic BIT NULL);
CREATE TABLE dbo.PerfSnapshotDeadlocks (PerfSnapshotDeadlocksID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, PerfSnapshotRunID BIGINT NOT NULL,
  DeadlockTimestamp DATETIME2(3) NULL, DeadlockXML XML NULL, VictimSessionID INT NULL, VictimDatabaseName SYSNAME NULL,
  VictimObjectName NVARCHAR(512) NULL, DeadlockGraphHash VARBINARY(64) NULL);
CREATE TABLE dbo.PerfSnapshotSiteBlobs (PerfSnapshotSiteBlobsID BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, PerfSnapshotRunID BIGINT NOT NULL,
  Note VARCHAR(MAX) COLLATE Greek_CI_AS NULL, Payload VARBINARY(MAX) NULL, SizeMB DECIMAL(18,2) NULL, IsCompressed BIT NOT NULL);
";

const TABLES: [&str; 4] = ["PerfSnapshotQueryPlans", "PerfSnapshotConfig", "PerfSnapshotDeadlocks", "PerfSnapshotSiteBlobs"];

/// Rows of a child table: the run's PerfSnapshotRunID and the values after it, in DDL order.
type Rows = Vec<(i64, Vec<Value>)>;

fn cyrillic() -> Collation {
    Collation::from_name("Cyrillic_General_CI_AS").unwrap()
}

fn opt(keep: bool, v: Value) -> Value {
    if keep { v } else { Value::Null }
}

fn ticks(text: &str) -> i64 {
    parse_datetime(text).unwrap()
}

/// A SQL_VARIANT of case `k`: every base type the test server stores in turn, with values at
/// their edges (and NULL now and then).
fn variant(k: u64) -> Value {
    let (base, value) = match k % 17 {
        0 => (SqlType::Int, Value::Int(2_147_483_647)),
        1 => (SqlType::BigInt, Value::Int(-9_000_000_000_123)),
        2 => (SqlType::SmallInt, Value::Int(-32_768)),
        3 => (SqlType::TinyInt, Value::Int(255)),
        4 => (SqlType::Bit, Value::Bool(k % 3 == 0)),
        5 => (SqlType::Decimal { precision: 18, scale: 2 }, Value::Decimal { mantissa: -12_345_678_901_234_567, scale: 2 }),
        6 => (SqlType::Numeric { precision: 38, scale: 10 }, Value::Decimal { mantissa: 12_345_678_901_234_567_890_123_456_789, scale: 10 }),
        7 => (SqlType::Float, Value::Float(0.1 + k as f64 / 7.0)),
        // DATETIME's 1/300 s ticks: .003 and .007 s steps.
        8 => (SqlType::DateTime, Value::DateTime2(datetime_ticks(45_352, 1 + k as u32 * 7))),
        9 => (SqlType::DateTime2(3), Value::DateTime2(ticks("2024-03-01 12:34:56.789"))),
        10 => (SqlType::DateTime2(7), Value::DateTime2(ticks("9999-12-31 23:59:59.9999999"))),
        11 => (SqlType::NVarChar(Some(256)), Value::Str(format!("max server memory (MB) ✓ Ωμέγα {k}"))),
        12 => (SqlType::VarChar(Some(60), cyrillic()), Value::Str(format!("Память сервера {k}"))),
        13 => (SqlType::VarBinary(Some(16)), Value::Bytes(vec![0, 0xFF, k as u8, 0x80])),
        14 => (SqlType::Binary(4), Value::Bytes(vec![k as u8, 0, 0, 1])),
        15 => (SqlType::UniqueIdentifier, Value::Bytes(hash(k, 16))),
        _ => return Value::Null,
    };
    Value::Variant(Box::new(Variant { base, value }))
}

fn hash(x: u64, n: usize) -> Vec<u8> {
    (0..n).map(|i| mix(x, i as u64) as u8).collect()
}

/// Three rows per run and table; one row of each run carries long values (more than 8000
/// bytes, so several PLP chunks), one is mostly NULL.
fn child_rows(run_ids: &[i64]) -> BTreeMap<&'static str, Rows> {
    let mut t: BTreeMap<&'static str, Rows> = TABLES.iter().map(|&n| (n, Vec::new())).collect();
    for (k, &run) in run_ids.iter().enumerate() {
        for i in 0..3u64 {
            let x = k as u64 * 3 + i;
            let full = i != 1;
            let long = i == 2;
            let plan = if long { format!("<ShowPlanXML xmlns=\"http://schemas.microsoft.com/sqlserver/2004/07/showplan\">{}</ShowPlanXML>", "<RelOp NodeId=\"1\" PhysicalOp=\"Index Seek\" Note=\"Ä→∑\"/>".repeat(400)) } else if x == 3 { String::new() } else { format!("<ShowPlanXML><Stmt Id=\"{x}\"/></ShowPlanXML>") };
            let sql = if long { "SELECT N'日本語', col FROM dbo.T WHERE x = 1; ".repeat(300) } else { format!("SELECT {x} -- é") };
            t.get_mut("PerfSnapshotQueryPlans").unwrap().push((run, vec![
                opt(full, Value::Bytes(hash(x, 8))),
                opt(full, Value::Bytes(hash(x + 1000, 8))),
                opt(full, Value::Str(format!("db_Ü_{x}"))),
                opt(full, Value::Str(sql)),
                opt(full, Value::Int(x as i64 * 1_000_003)),
                opt(full, Value::Decimal { mantissa: -(x as i128) * 12_345, scale: 4 }),
                opt(full, Value::Str(plan)),
                // Cyrillic in a cp1251 column; an empty string is not NULL.
                opt(full, Value::Str(if i == 0 { format!("Высокая нагрузка ЦП {x}") } else { String::new() })),
            ]));
            t.get_mut("PerfSnapshotConfig").unwrap().push((run, vec![
                Value::Int(1_000 + x as i64),
                Value::Str(format!("config option {x} «ß»")),
                variant(x * 4),
                variant(x * 4 + 1),
                variant(x * 4 + 2),
                variant(x * 4 + 3),
                opt(full, Value::Bool(x % 2 == 0)),
                opt(full, Value::Bool(x % 3 == 0)),
            ]));
            let graph = if long { format!("<deadlock><victim-list><victimProcess id=\"p{x}\"/></victim-list>{}</deadlock>", "<process id=\"p1\" spid=\"55\" waitresource=\"KEY: 5:72057594043170816 (8194443284a0)\">Σ</process>".repeat(150)) } else { format!("<deadlock id=\"{x}\"/>") };
            t.get_mut("PerfSnapshotDeadlocks").unwrap().push((run, vec![
                opt(full, Value::DateTime2(EPOCH_TICKS + (T0 + x as i64 * 61_001) * 10_000)),
                opt(full, Value::Str(graph)),
                opt(full, Value::Int(50 + x as i64)),
                opt(full, Value::Str("Продажи".into())),
                opt(full, Value::Str(format!("dbo.Orders_{x}"))),
                opt(full, Value::Bytes(if i == 0 { Vec::new() } else { hash(x, 64) })),
            ]));
            t.get_mut("PerfSnapshotSiteBlobs").unwrap().push((run, vec![
                opt(full, Value::Str(if long { "Καλημέρα κόσμε, ".repeat(700) } else { format!("Σημείωση {x}") })),
                opt(full, Value::Bytes(if long { hash(x, 30_000) } else if i == 0 { Vec::new() } else { hash(x, 10) })),
                opt(full, Value::Decimal { mantissa: 9_999_999_999_999_999 - x as i128, scale: 2 }),
                Value::Bool(x % 2 == 1),
            ]));
        }
    }
    t
}

/// Rows by their run's SnapshotUTC (as 100 ns ticks), each run's rows sorted: order within a
/// run is not part of what a copy keeps.
type ByRun = BTreeMap<i64, Vec<String>>;

fn by_run(rows: &Rows, snapshot_of: &BTreeMap<i64, i64>) -> ByRun {
    let mut out = ByRun::new();
    for (run, values) in rows {
        out.entry(snapshot_of[run]).or_default().push(format!("{values:?}"));
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// PerfSnapshotRunID -> SnapshotUTC ticks of `db`'s runs.
fn run_snapshots(srv: &TestServer, db: &str) -> BTreeMap<i64, i64> {
    let cols = srv.table_columns(db, "dbo.PerfSnapshotRun").unwrap();
    let at = |n: &str| cols.iter().position(|c| c.name == n).unwrap();
    let (id, snap) = (at("PerfSnapshotRunID"), at("SnapshotUTC"));
    srv.table_rows(db, "dbo.PerfSnapshotRun")
        .unwrap()
        .into_iter()
        .map(|r| match (&r[id], &r[snap]) {
            (Value::Int(i), Value::DateTime2(t)) => (*i, *t),
            other => panic!("{db} run row {other:?}"),
        })
        .collect()
}

/// A table's rows in `db` as the server stores them (its identity left out).
fn stored(srv: &TestServer, db: &str, table: &str) -> Rows {
    srv.table_rows(db, &format!("dbo.{table}")).unwrap().into_iter().map(|r| (if let Value::Int(run) = r[1] { run } else { panic!("{table} run {:?}", r[1]) }, r[2..].to_vec())).collect()
}

fn assert_target_holds(srv: &TestServer, db: &str, want: &BTreeMap<&'static str, ByRun>) {
    let snapshots = run_snapshots(srv, db);
    for (table, want) in want {
        let got = by_run(&stored(srv, db, table), &snapshots);
        assert_same(&format!("{db}.{table}"), &got, want);
    }
}

fn assert_same<K: Ord + std::fmt::Debug>(what: &str, got: &BTreeMap<K, Vec<String>>, want: &BTreeMap<K, Vec<String>>) {
    assert_eq!(got.len(), want.len(), "{what}: runs with rows");
    for (run, rows) in want {
        let g = got.get(run).unwrap_or_else(|| panic!("{what}: no rows for the run at {run:?}"));
        for (a, b) in g.iter().zip(rows) {
            assert!(a == b, "{what} run at {run:?}:\n got  {}\n want {}", &a[..a.len().min(600)], &b[..b.len().min(600)]);
        }
        assert_eq!(g.len(), rows.len(), "{what}: rows of the run at {run:?}");
    }
}

/// The child rows by table, built by the test, and each run's SnapshotUTC ticks.
struct Seeded {
    rows: BTreeMap<&'static str, Rows>,
    snapshot_of: BTreeMap<i64, i64>,
}

impl Seeded {
    fn by_run(&self) -> BTreeMap<&'static str, ByRun> {
        self.rows.iter().map(|(t, r)| (*t, by_run(r, &self.snapshot_of))).collect()
    }
}

/// Creates DBATools (PerfSnapshotRun and the child tables, filled) and the MonitoringDBs.
fn setup(srv: &TestServer, dir: &std::path::Path, targets: &[&str]) -> Seeded {
    let runs = series("SQL-Ωμέγα\\INST", T0, 4, 500, 11);
    seed(srv, dir, "DBATools", &runs, true);
    srv.execute("DBATools", DDL).unwrap();
    let ids: Vec<i64> = runs.iter().map(|r| r.run_id).collect();
    let rows = child_rows(&ids);
    for (table, rows) in &rows {
        let cols: Vec<String> = srv.table_columns("DBATools", &format!("dbo.{table}")).unwrap().into_iter().skip(1).map(|c| c.name).collect();
        let names: Vec<&str> = cols.iter().map(String::as_str).collect();
        let n = srv.insert_rows("DBATools", &format!("dbo.{table}"), &names, rows.iter().map(|(run, v)| std::iter::once(Value::Int(*run)).chain(v.iter().cloned()).collect()).collect()).unwrap();
        assert_eq!(n as usize, rows.len());
        // The server stores exactly what the test built (the values are already of their types).
        assert_eq!(stored(srv, "DBATools", table), *rows, "DBATools.{table} as stored");
    }
    for db in targets {
        srv.create_monitoringdb(db);
        srv.execute(db, DDL).unwrap();
    }
    Seeded { rows, snapshot_of: runs.iter().map(|r| (r.run_id, EPOCH_TICKS + r.snapshot_ms * 10_000)).collect() }
}

/// 100 ns ticks as pytds shows a DATETIME2: microseconds (the 7th digit cut).
fn iso_micros(t: i64) -> String {
    Value::ticks_to_naive(t).unwrap().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// A value as tests/python/child_types_pytds.py writes what pytds returned for it.
fn pytds_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Decimal { mantissa, scale } => {
            let (mut n, mut d) = (*mantissa, 10i128.pow(u32::from(*scale)));
            let g = gcd(n.unsigned_abs(), d.unsigned_abs()) as i128;
            (n, d) = (n / g, d / g);
            json!(format!("{n}/{d}"))
        }
        // "0x" and uppercase hex.
        Value::Bytes(_) => json!(v.to_string()),
        Value::DateTime2(t) => json!(iso_micros(*t)),
        Value::Variant(var) => match (var.base, &var.value) {
            // As SQL Server shows a GUID: the first three groups' bytes reversed.
            (SqlType::UniqueIdentifier, Value::Bytes(d)) => {
                let h = |r: &[u8]| r.iter().map(|b| format!("{b:02X}")).collect::<String>();
                let rev = |r: &[u8]| h(&r.iter().rev().copied().collect::<Vec<u8>>());
                json!(format!("{}-{}-{}-{}-{}", rev(&d[0..4]), rev(&d[4..6]), rev(&d[6..8]), h(&d[8..10]), h(&d[10..16])))
            }
            // pytds rounds DATETIME's 1/300 s to milliseconds.
            (SqlType::DateTime, Value::DateTime2(t)) => json!(iso_micros((t + 5_000).div_euclid(10_000) * 10_000)),
            (_, v) => pytds_json(v),
        },
    }
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// python-tds reads `db`'s child tables; every value must be the test's.
fn assert_pytds_reads(srv: &TestServer, db: &str, seeded: &Seeded) {
    let port = srv.addr().port().to_string();
    let mut args = vec![format!("{}/tests/python/child_types_pytds.py", env!("CARGO_MANIFEST_DIR")), port, db.to_string()];
    args.extend(TABLES.iter().map(|t| t.to_string()));
    let out = std::process::Command::new("python3").args(&args).env("PERFCOPY_CLIENT_PW", PW).output().unwrap();
    assert!(out.status.success(), "pytds on {db}: {}", String::from_utf8_lossy(&out.stderr));
    let got: BTreeMap<String, Vec<Vec<Json>>> = serde_json::from_slice(&out.stdout).unwrap();
    for (table, rows) in &seeded.rows {
        let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (run, values) in rows {
            want.entry(iso_micros(seeded.snapshot_of[run])).or_default().push(serde_json::to_string(&values.iter().map(pytds_json).collect::<Vec<_>>()).unwrap());
        }
        let mut have: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in &got[*table] {
            let run = row[0].as_str().unwrap_or_else(|| panic!("{db}.{table}: run {:?}", row[0])).to_string();
            have.entry(run).or_default().push(serde_json::to_string(&row[1..]).unwrap());
        }
        want.values_mut().chain(have.values_mut()).for_each(|v| v.sort());
        assert_same(&format!("pytds {db}.{table}"), &have, &want);
    }
}

/// False (after saying why) when python-tds is missing; under CI it must be there.
fn pytds_available() -> bool {
    let ok = std::process::Command::new("python3").args(["-c", "import pytds"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python-tds is missing and CI is set (pip install -r scripts/requirements-test.txt)");
        eprintln!("SKIPPED the python-tds reads: `import pytds` fails (pip install python-tds)");
    }
    ok
}

#[test]
fn every_child_type_moves_into_monitoringdb_and_through_a_stage_exactly() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let seeded = setup(&srv, dir.path(), &["MonitoringDB", "MonitoringDB2"]);
    let want = seeded.by_run();
    let from = conn(&srv, "DBATools");

    // DBATools -> MonitoringDB over TDS: perfcopy's SELECT decoder and its bulk encoder.
    let report = copy_json(&["--from", &from, "--to", &conn(&srv, "MonitoringDB"), "--register-servers"]);
    assert_eq!(report_totals(&report).rows_written, 4, "runs written");
    assert_target_holds(&srv, "MonitoringDB", &want);

    // DBATools -> stage -> MonitoringDB2: the stage's Parquet types and back.
    let stage = dir.path().join("stage");
    copy_json(&["--from", &from, "--stage", s(&stage), "--register-servers"]);
    copy_json(&["--from", s(&stage), "--to", &conn(&srv, "MonitoringDB2"), "--register-servers"]);
    assert_target_holds(&srv, "MonitoringDB2", &want);

    // perfcopy's verify reads every target back (its own read path of the types) and finds
    // each table's 12 rows, none missing, doubled or differing.
    for (label, target) in [("MonitoringDB", vec!["--to", &conn(&srv, "MonitoringDB")]), ("stage", vec!["--stage", s(&stage)]), ("MonitoringDB2", vec!["--to", &conn(&srv, "MonitoringDB2")])] {
        let mut args = vec!["verify", "--json", "--from", &from];
        args.extend(target.iter().copied());
        let o = perfcopy(&args);
        let v: Json = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("verify {label}: {e}: {}", stderr(&o).lines().last().unwrap_or("")));
        assert_eq!(o.status.code(), Some(0), "verify {label}: {v}");
        let mut tables: Vec<&str> = Vec::new();
        for c in v["children"].as_array().unwrap_or_else(|| panic!("verify {label}: {v}")) {
            let n = |f: &str| c[f].as_u64().unwrap_or_else(|| panic!("{f} in {c}"));
            assert_eq!([n("source_rows"), n("target_rows"), n("missing"), n("duplicates"), n("differing_runs")], [12, 12, 0, 0, 0], "verify {label}: {c}");
            tables.push(c["table"].as_str().unwrap());
        }
        tables.sort();
        let mut want = TABLES.to_vec();
        want.sort();
        assert_eq!(tables, want, "verify {label}: tables");
    }

    // A client we did not write reads the source (the server's own encoding of each type) and
    // both targets.
    if pytds_available() {
        for db in ["DBATools", "MonitoringDB", "MonitoringDB2"] {
            assert_pytds_reads(&srv, db, &seeded);
        }
    }
}

/// The VARCHAR columns of the child tables `--create-missing-tables` created in `db` have the
/// source's collations (and so its code pages), and hold every value the test seeded.
fn assert_created_with_source_collations(srv: &TestServer, db: &str, seeded: &Seeded) {
    let varchar = |table: &str, column: &str| {
        let cols = srv.table_columns(db, &format!("dbo.{table}")).unwrap();
        cols.into_iter().find(|c| c.name == column).unwrap_or_else(|| panic!("{db}.{table} has no {column}")).ty
    };
    assert_eq!(varchar("PerfSnapshotQueryPlans", "CaptureReason"), SqlType::VarChar(Some(50), cyrillic()));
    assert_eq!(varchar("PerfSnapshotSiteBlobs", "Note"), SqlType::VarChar(None, Collation::from_name("Greek_CI_AS").unwrap()));
    assert_target_holds(srv, db, &seeded.by_run());
}

/// Copies DBATools into a MonitoringDB without child tables with `--create-missing-tables`,
/// directly or through a stage, and checks the created tables and their rows.
fn copy_creating_the_tables(through_stage: bool) {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let seeded = setup(&srv, dir.path(), &[]);
    srv.create_monitoringdb("MonitoringDB");
    let dbatools = conn(&srv, "DBATools");
    let stage = dir.path().join("stage");
    let from = if through_stage {
        copy_json(&["--from", &dbatools, "--stage", s(&stage), "--register-servers"]);
        s(&stage).to_string()
    } else {
        dbatools
    };
    let report = copy_json(&["--from", &from, "--to", &conn(&srv, "MonitoringDB"), "--register-servers", "--create-missing-tables"]);
    assert_eq!(report_totals(&report).rows_written, 4, "runs written");
    assert_created_with_source_collations(&srv, "MonitoringDB", &seeded);
}

/// Regression (tables created without COLLATE took the target's default, code page 1252, and
/// Cyrillic text from a Cyrillic_General_CI_AS column stopped the copy): a table perfcopy
/// creates declares each VARCHAR column in its source's collation, and the text arrives.
#[test]
fn created_tables_keep_the_sources_collation_and_its_text() {
    copy_creating_the_tables(false);
}

/// The same through a stage: its files record each VARCHAR's collation, and a load from the
/// stage creates the table with it.
#[test]
fn tables_created_from_a_stage_keep_the_sources_collation() {
    copy_creating_the_tables(true);
}

/// A target table that exists keeps its columns: text its VARCHAR's code page (1252 here)
/// lacks stops the copy naming the column and the character, and leaves the target without a
/// run or child row (never a `?` in place of a letter).
#[test]
fn text_an_existing_target_column_lacks_stops_the_copy_and_nothing_is_written() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    setup(&srv, dir.path(), &[]);
    srv.create_monitoringdb("MonitoringDB");
    srv.execute("MonitoringDB", &DDL.replace(" COLLATE Cyrillic_General_CI_AS", "")).unwrap();
    let before = srv.table_columns("MonitoringDB", "dbo.PerfSnapshotQueryPlans").unwrap();
    assert!(before.iter().any(|c| c.name == "CaptureReason" && c.ty == SqlType::VarChar(Some(50), Collation::DEFAULT)), "{before:?}");
    let o = perfcopy(&["copy", "--from", &conn(&srv, "DBATools"), "--to", &conn(&srv, "MonitoringDB"), "--register-servers", "--create-missing-tables"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("CaptureReason") && err.contains("U+0412") && err.contains("windows-1252"), "{err}");
    let after = srv.table_columns("MonitoringDB", "dbo.PerfSnapshotQueryPlans").unwrap();
    assert_eq!(format!("{after:?}"), format!("{before:?}"), "the existing table is left as it was");
    assert_eq!(srv.row_count("MonitoringDB", "dbo.PerfSnapshotRun").unwrap(), 0);
    for t in TABLES {
        assert_eq!(srv.row_count("MonitoringDB", &format!("dbo.{t}")).unwrap(), 0, "{t}");
    }
}
