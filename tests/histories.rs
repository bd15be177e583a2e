//! DBATools histories as they happen, and what they do to watermarks: cloned instances that keep
//! one `@@SERVERNAME`, tables created again or truncated (IDENTITY back at 1), restores from an
//! older backup (IDs go back, then grow over other snapshots), renamed servers, several DBATools
//! databases on one instance, rows of one server in another server's DBATools, and a ledger the
//! toolkit's own procedure (or a DBA) wrote to. Each copy goes through the binary into a Parquet
//! stage and into a MonitoringDB on the TDS test server, and the target is compared with the
//! model (tests/common's plain survivor rule over every row the sources hold now).
//!
//! Every source also holds a child table (PerfSnapshotWaitStats, 1..=3 rows per run) that its
//! histories share: it is cloned, restored, truncated and created again with its runs. A run's
//! children follow from the run's snapshot and values alone, so whichever source row of a key
//! survives, the target must hold exactly that row's children, once.

mod common;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use common::mssql::*;
use common::*;
use proptest::prelude::*;
use serde_json::Value;
use common::kids::{self, ChildSet};
use tds_test_server::{Column, SqlType, TestServer};

/// Names the sources' rows carry, and the ServerIDs the target gives them (SQL01N: SQL01
/// after a rename, mapped to the same ID by --server-map).
const SERVERS: &[(&str, i32)] = &[("SQL01", 1), ("SQL02", 2), ("SQLX", 3)];
const ALIASES: &[(&str, i32)] = &[("SQL01", 1), ("SQL02", 2), ("SQLX", 3), ("SQL01N", 1)];

/// The child table every source and target holds.
const KIDS: &str = "PerfSnapshotWaitStats";

fn kid_columns() -> Vec<Column> {
    vec![
        Column::new("PerfSnapshotWaitStatsID", SqlType::BigInt, false).identity(),
        Column::new("PerfSnapshotRunID", SqlType::BigInt, false),
        Column::new("WaitType", SqlType::NVarChar(Some(60)), false),
        Column::new("WaitTimeMs", SqlType::BigInt, true),
    ]
}

/// The children of a run with this snapshot and these values: 1..=3 rows, a NULL now and then.
fn kids_of(snapshot_ms: i64, v: &Values) -> Vec<(String, Option<i64>)> {
    let mut h = DefaultHasher::new();
    (snapshot_ms, v).hash(&mut h);
    let x = h.finish();
    (0..1 + x % 3)
        .map(|i| {
            let y = x.rotate_left(17 * i as u32 + 5) ^ i;
            (format!("WAIT_{}_{}", y % 50, i), (y % 4 != 0).then_some((y % 100_000) as i64))
        })
        .collect()
}

/// [`kids_of`] as tests/common/kids canonical text, sorted.
fn kid_texts(snapshot_ms: i64, v: &Values) -> Vec<String> {
    let mut t: Vec<String> = kids_of(snapshot_ms, v).into_iter().map(|(w, n)| format!("{w:?}|{}", n.map_or("NULL".to_string(), |n| n.to_string()))).collect();
    t.sort();
    t
}

/// Creates (or creates again, empty) the child table in `db`.
fn create_kids(srv: &TestServer, db: &str) {
    srv.create_table(db, &format!("dbo.{KIDS}"), kid_columns(), &[&["PerfSnapshotWaitStatsID"]]).unwrap();
}

/// Inserts the children of `rows` (under their source run IDs).
fn add_kids(srv: &TestServer, db: &str, rows: &[SrcRow]) {
    let k: Vec<(i64, String, Option<i64>)> = rows.iter().flat_map(|r| kids_of(r.snapshot_ms, &r.v).into_iter().map(move |(w, n)| (r.run_id, w, n))).collect();
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("PerfSnapshotRunID", DataType::Int64, false),
            Field::new("WaitType", DataType::Utf8, false),
            Field::new("WaitTimeMs", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(k.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(k.iter().map(|r| r.1.as_str()))),
            Arc::new(Int64Array::from_iter(k.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    srv.insert_batch(db, &format!("dbo.{KIDS}"), &b).unwrap();
}

/// A DBATools database `db` (created again) holding `rows` and their children.
fn seed(srv: &TestServer, dir: &Path, db: &str, rows: &[SrcRow], with_server_id: bool) {
    common::mssql::seed(srv, dir, db, rows, with_server_id);
    create_kids(srv, db);
    add_kids(srv, db, rows);
}

/// Adds `rows` and their children to `db`.
fn add_rows(srv: &TestServer, dir: &Path, db: &str, rows: &[SrcRow], with_server_id: bool) {
    common::mssql::add_rows(srv, dir, db, rows, with_server_id);
    add_kids(srv, db, rows);
}

/// TRUNCATE TABLE of the runs, their children first (as the collector's reinstall does).
fn truncate(srv: &TestServer, db: &str) {
    srv.truncate_table(db, &format!("dbo.{KIDS}")).unwrap();
    srv.truncate_table(db, "dbo.PerfSnapshotRun").unwrap();
}

/// A target under test, with the model of what it must hold.
struct Target {
    kind: Kind,
    map_file: PathBuf,
    model: BTreeMap<(i32, i64), Row>,
    /// Child rows a MonitoringDB holds of runs deleted there by hand (not perfcopy's to fix).
    stale_orphans: usize,
    /// Copies made so far: they take turns at the unit byte bound (see [`UNIT_BYTES`]).
    copies: usize,
}

/// `PERFCOPY_TEST_CHILD_UNIT_BYTES` of successive copies: the default bound (a batch's 40 runs
/// in one unit), one run per unit, and units of a few runs, so the watermarks and the
/// children of every history are also checked when batches go out in parts.
const UNIT_BYTES: [Option<&str>; 3] = [None, Some("1"), Some("600")];

enum Kind {
    Stage(PathBuf),
    Monitoring(TestServer),
}

impl Target {
    /// A Parquet stage (`stage`) or a MonitoringDB, knowing [`SERVERS`].
    fn new(dir: &Path, stage: bool) -> Target {
        std::fs::create_dir_all(dir).unwrap();
        let map_file = dir.join("servers-map.csv");
        write_map(&map_file, ALIASES);
        let kind = if stage {
            let p = dir.join("stage");
            std::fs::create_dir_all(&p).unwrap();
            write_map(&p.join("servers.csv"), SERVERS);
            Kind::Stage(p)
        } else {
            let srv = server();
            seed_target(&srv, "MonitoringDB", SERVERS, &[]);
            create_kids(&srv, "MonitoringDB");
            Kind::Monitoring(srv)
        };
        Target { kind, map_file, model: BTreeMap::new(), stale_orphans: 0, copies: 0 }
    }

    fn args(&self) -> Vec<String> {
        let mut a = match &self.kind {
            Kind::Stage(p) => vec!["--stage".to_string(), s(p).to_string()],
            Kind::Monitoring(srv) => vec!["--to".to_string(), conn(srv, "MonitoringDB")],
        };
        a.extend(["--server-map".to_string(), s(&self.map_file).to_string(), "--batch-rows".to_string(), "40".to_string()]);
        a
    }

    fn rows(&self) -> BTreeMap<(i32, i64), Row> {
        match &self.kind {
            Kind::Stage(p) => by_key(&read_stage(p)),
            Kind::Monitoring(srv) => target_rows(srv, "MonitoringDB"),
        }
    }

    /// The target's children, by their run's key.
    fn kids(&self) -> ChildSet {
        match &self.kind {
            Kind::Stage(p) => kids::stage_rows(p, KIDS),
            Kind::Monitoring(srv) => {
                let runs = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
                let (got, orphans) = kids::target_rows(&runs, &srv.table_batch("MonitoringDB", &format!("dbo.{KIDS}")).unwrap());
                assert_eq!(orphans, self.stale_orphans, "MonitoringDB: child rows whose run is not in dbo.PerfSnapshotRun");
                got
            }
        }
    }

    /// Runs T-SQL in the MonitoringDB (a DBA's or the toolkit's session).
    fn sql(&self, sql: &str) {
        let Kind::Monitoring(srv) = &self.kind else { panic!("not a MonitoringDB") };
        exec_sql(srv, "MonitoringDB", sql);
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Stage(_) => "stage",
            Kind::Monitoring(_) => "MonitoringDB",
        }
    }

    /// Copies `sources` (connection strings, with the rows each holds now, in `--from` order),
    /// checks the target against the model, and returns the report.
    fn copy(&mut self, sources: &[(String, Vec<SrcRow>)]) -> Value {
        let mut args: Vec<String> = Vec::new();
        for (c, _) in sources {
            args.extend(["--from".to_string(), c.clone()]);
        }
        args.extend(self.args());
        let mut a: Vec<&str> = vec!["copy", "--json"];
        a.extend(args.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = UNIT_BYTES[self.copies % UNIT_BYTES.len()].map(|b| ("PERFCOPY_TEST_CHILD_UNIT_BYTES", b)).into_iter().collect();
        self.copies += 1;
        let report = ok_json(&perfcopy_env(&a, &env));
        let rows: Vec<Vec<SrcRow>> = sources.iter().map(|(_, r)| r.clone()).collect();
        self.model = expected(&rows, &name_map(ALIASES), Win::default(), &self.model).stage;
        assert_rows_eq(self.name(), &self.rows(), &self.model);
        let want: ChildSet = self.model.iter().map(|(k, r)| (*k, kid_texts(r.snapshot_ms, &r.v))).collect();
        if let Err(e) = kids::diff(&format!("{} {KIDS}", self.name()), &self.kids(), &want) {
            panic!("{e}\nreport: {report}");
        }
        report
    }
}

/// The watermark status of source `i` in a report, and its reason.
fn wm(report: &Value, i: usize) -> (String, String) {
    let w = &report["sources"][i]["watermark"];
    (w["status"].as_str().unwrap_or_else(|| panic!("no watermark status in {report}")).to_string(), w["reason"].as_str().unwrap_or("").to_string())
}

fn written(report: &Value) -> u64 {
    report_totals(report).rows_written
}

/// Both targets, each in its own directory.
fn each_target(mut f: impl FnMut(&Path, Target)) {
    for stage in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let target = Target::new(t.path(), stage);
        f(t.path(), target);
    }
}

/// The bug this guards: a second instance with the same @@SERVERNAME and database name (a
/// cloned VM, the host since renamed) was "resumed after" the first one's LastRunID and half
/// of its rows never arrived, with exit 0.
#[test]
fn a_renamed_clone_with_the_same_servername_loses_nothing() {
    each_target(|dir, mut tgt| {
        let (a, b) = (server_named("SQL01", "HOSTA"), server_named("SQL01", "HOSTB"));
        let rows_a = series("SQL01", T0, 300, 1, 1);
        let rows_b = series("SQL01", T0 + 17, 150, 1, 2);
        seed(&a, dir, "DBATools", &rows_a, true);
        seed(&b, dir, "DBATools", &rows_b, true);
        let (ca, cb) = (conn(&a, "DBATools"), conn(&b, "DBATools"));
        let r = tgt.copy(&[(cb.clone(), rows_b.clone())]);
        assert_eq!(wm(&r, 0).0, "none");
        let r = tgt.copy(&[(ca.clone(), rows_a.clone())]);
        assert_eq!(wm(&r, 0).0, "none", "A is another instance (HOSTA), B's watermark is not A's: {r}");
        assert_eq!(written(&r), 300);
        // Each now resumes after its own watermark.
        for (c, rows) in [(&ca, &rows_a), (&cb, &rows_b)] {
            let r = tgt.copy(&[(c.clone(), rows.clone())]);
            assert_eq!(wm(&r, 0), ("used".into(), String::new()), "{r}");
            assert_eq!(report_totals(&r).rows_read, 0);
        }
    });
}

/// Clones that report the same host name too (the VM was copied, nothing renamed) share a
/// watermark identity; their histories are the same up to the clone and differ after it. Each
/// copy checks the watermark against its own rows.
#[test]
fn unrenamed_clones_share_an_identity_and_each_is_checked_against_its_rows() {
    each_target(|dir, mut tgt| {
        let (a, b) = (server_named("SQL01", "SQL01"), server_named("SQL01", "SQL01"));
        let shared = series("SQL01", T0, 100, 1, 3);
        seed(&a, dir, "DBATools", &shared, true);
        b.attach_database_copy("DBATools", &a.backup_database("DBATools").unwrap());
        let more_a = series("SQL01", T0 + 100 * MIN5, 200, 101, 4);
        let more_b = series("SQL01", T0 + 100 * MIN5 + 29, 120, 101, 5);
        add_rows(&a, dir, "DBATools", &more_a, true);
        add_rows(&b, dir, "DBATools", &more_b, true);
        let rows_a: Vec<SrcRow> = shared.iter().chain(&more_a).cloned().collect();
        let rows_b: Vec<SrcRow> = shared.iter().chain(&more_b).cloned().collect();
        let (ca, cb) = (conn(&a, "DBATools"), conn(&b, "DBATools"));

        tgt.copy(&[(cb.clone(), rows_b.clone())]);
        let r = tgt.copy(&[(ca.clone(), rows_a.clone())]);
        let (status, reason) = wm(&r, 0);
        assert_eq!(status, "set_aside", "{r}");
        assert!(reason.contains("row 220 is another snapshot"), "{reason}");
        assert_eq!(written(&r), 200, "A's own rows after the clone");
        // A's watermark (300) is now the identity's; B has no row 300.
        let r = tgt.copy(&[(cb.clone(), rows_b.clone())]);
        assert_eq!(wm(&r, 0), ("set_aside".into(), "row 300 no longer in the source".into()), "{r}");
        assert_eq!(written(&r), 0);
        // Both in one run: both read, nothing doubled.
        let r = tgt.copy(&[(ca.clone(), rows_a.clone()), (cb.clone(), rows_b.clone())]);
        assert_eq!(written(&r), 0);
    });
}

/// The bug this guards: after the collector was reinstalled (table created again, IDENTITY
/// back at 1) every new snapshot was skipped until the new IDs passed the old LastRunID.
#[test]
fn a_table_created_again_or_truncated_is_read_whole() {
    each_target(|dir, mut tgt| {
        let a = server_named("SQL01", "SQL01");
        let first = series("SQL01", T0, 300, 1, 6);
        seed(&a, dir, "DBATools", &first, true);
        let c = conn(&a, "DBATools");
        tgt.copy(&[(c.clone(), first.clone())]);

        // Dropped and created again: fewer rows than the old watermark.
        let again = series("SQL01", T0 + 300 * MIN5, 100, 1, 7);
        seed(&a, dir, "DBATools", &again, true);
        let r = tgt.copy(&[(c.clone(), again.clone())]);
        let (status, reason) = wm(&r, 0);
        assert_eq!(status, "set_aside");
        assert!(reason.contains("dbo.PerfSnapshotRun was created again"), "{reason}");
        assert_eq!(written(&r), 100);

        // Truncated (same table object, IDENTITY back at 1) and grown past the old watermark
        // over other snapshots: row 100 exists, but is another snapshot.
        truncate(&a, "DBATools");
        let grown = series("SQL01", T0 + 400 * MIN5, 350, 1, 8);
        add_rows(&a, dir, "DBATools", &grown, true);
        let r = tgt.copy(&[(c.clone(), grown.clone())]);
        let (status, reason) = wm(&r, 0);
        assert_eq!(status, "set_aside");
        assert!(reason.contains("row 100 is another snapshot"), "{reason}");
        assert_eq!(written(&r), 350);
    });
}

/// Restored from a backup older than the watermark, then grown again: IDs went back, and the
/// new rows reuse IDs the target has seen for other snapshots.
#[test]
fn a_restore_from_an_older_backup_is_read_whole() {
    each_target(|dir, mut tgt| {
        let a = server_named("SQL01", "SQL01");
        let old = series("SQL01", T0, 150, 1, 9);
        seed(&a, dir, "DBATools", &old, true);
        let backup = a.backup_database("DBATools").unwrap();
        let later = series("SQL01", T0 + 150 * MIN5, 150, 151, 10);
        add_rows(&a, dir, "DBATools", &later, true);
        let c = conn(&a, "DBATools");
        let all: Vec<SrcRow> = old.iter().chain(&later).cloned().collect();
        tgt.copy(&[(c.clone(), all)]);

        a.restore_database("DBATools", &backup);
        let regrown = series("SQL01", T0 + 150 * MIN5 + 41, 200, 151, 11);
        add_rows(&a, dir, "DBATools", &regrown, true);
        let now: Vec<SrcRow> = old.iter().chain(&regrown).cloned().collect();
        let r = tgt.copy(&[(c.clone(), now.clone())]);
        let (status, reason) = wm(&r, 0);
        assert_eq!(status, "set_aside");
        assert!(reason.contains("was restored or created again"), "{reason}");
        assert_eq!(written(&r), 200);
        let r = tgt.copy(&[(c, now)]);
        assert_eq!(wm(&r, 0).0, "used");
    });
}

/// A server renamed properly (sp_dropserver/sp_addserver: @@SERVERNAME and the host agree) is
/// another identity: read whole once, then incremental again. Its new name maps to its old ID.
#[test]
fn a_renamed_server_is_read_whole_once_then_resumes() {
    each_target(|dir, mut tgt| {
        let a = server_named("SQL01", "SQL01");
        let before = series("SQL01", T0, 200, 1, 12);
        seed(&a, dir, "DBATools", &before, true);
        let c = conn(&a, "DBATools");
        tgt.copy(&[(c.clone(), before.clone())]);
        a.set_server_name("SQL01N");
        a.set_machine_name("SQL01N");
        let after = series("SQL01N", T0 + 200 * MIN5, 100, 201, 13);
        add_rows(&a, dir, "DBATools", &after, true);
        let all: Vec<SrcRow> = before.iter().chain(&after).cloned().collect();
        let r = tgt.copy(&[(c.clone(), all.clone())]);
        assert_eq!(wm(&r, 0).0, "none", "{r}");
        assert_eq!(written(&r), 100);
        let r = tgt.copy(&[(c, all)]);
        assert_eq!(wm(&r, 0).0, "used", "{r}");
    });
}

/// Two DBATools databases on one instance, one of them holding another server's rows (its
/// collector watches SQL02 remotely); SQL02's own DBATools holds some of the same snapshots.
/// Each database keeps its own watermark, whatever names its rows carry.
#[test]
fn several_dbatools_per_instance_and_rows_of_another_server() {
    each_target(|dir, mut tgt| {
        let (x, y) = (server_named("SQLX", "SQLX"), server_named("SQL02", "SQL02"));
        let remote = series("SQL02", T0, 120, 1, 14);
        let own_x = series("SQLX", T0, 80, 1, 15);
        let mut own_y = series("SQL02", T0 + 120 * MIN5, 60, 1, 16);
        own_y.extend(copy_rows(&remote[20..50], 61, 4, None));
        seed(&x, dir, "DBATools_Remote", &remote, true);
        seed(&x, dir, "DBATools", &own_x, true);
        seed(&y, dir, "DBATools", &own_y, true);
        let sources = |r: &[SrcRow], ox: &[SrcRow], oy: &[SrcRow]| {
            vec![
                (conn(&x, "DBATools_Remote"), r.to_vec()),
                (conn(&x, "DBATools"), ox.to_vec()),
                (conn(&y, "DBATools"), oy.to_vec()),
            ]
        };
        tgt.copy(&sources(&remote, &own_x, &own_y));
        let more_r: Vec<SrcRow> = remote.iter().cloned().chain(series("SQL02", T0 + 300 * MIN5, 30, 121, 17)).collect();
        let more_x: Vec<SrcRow> = own_x.iter().cloned().chain(series("SQLX", T0 + 300 * MIN5, 20, 81, 18)).collect();
        add_rows(&x, dir, "DBATools_Remote", &more_r[120..], true);
        add_rows(&x, dir, "DBATools", &more_x[80..], true);
        let r = tgt.copy(&sources(&more_r, &more_x, &own_y));
        for i in 0..3 {
            assert_eq!(wm(&r, i).0, "used", "source {i}: {r}");
        }
        assert_eq!(report_counts(&r).iter().map(|c| c.rows_read).collect::<Vec<_>>(), [30, 20, 0]);
    });
}

/// A watermark whose row's key is gone from the target (rows purged or lost there) is not used.
#[test]
fn a_watermark_whose_key_left_the_target_is_not_used() {
    each_target(|dir, mut tgt| {
        let a = server_named("SQL01", "SQL01");
        let rows = series("SQL01", T0, 200, 1, 19);
        seed(&a, dir, "DBATools", &rows, true);
        let c = conn(&a, "DBATools");
        tgt.copy(&[(c.clone(), rows.clone())]);
        let last = rows.last().unwrap().snapshot_ms;
        match &tgt.kind {
            Kind::Monitoring(_) => tgt.sql(&format!("DELETE FROM dbo.PerfSnapshotRun WHERE SnapshotUTC >= CAST('{}' AS DATETIME2(3))", iso_ms(last - 50 * MIN5).trim_end_matches('Z'))),
            Kind::Stage(p) => {
                // A purge of the stage takes the runs' children with them.
                for (_, f) in stage_files(p) {
                    std::fs::remove_file(f).unwrap();
                }
                std::fs::remove_dir_all(p.join(KIDS)).unwrap();
            }
        }
        tgt.model = tgt.rows();
        if let Kind::Monitoring(srv) = &tgt.kind {
            let runs = srv.table_batch("MonitoringDB", "dbo.PerfSnapshotRun").unwrap();
            tgt.stale_orphans = kids::target_rows(&runs, &srv.table_batch("MonitoringDB", &format!("dbo.{KIDS}")).unwrap()).1;
            assert!(tgt.stale_orphans > 0);
        }
        let r = tgt.copy(&[(c, rows)]);
        let (status, reason) = wm(&r, 0);
        assert_eq!(status, "set_aside", "{r}");
        assert!(reason.contains("row 200's key (ServerID 1,") && reason.contains("is not in the target"), "{reason}");
        assert!(written(&r) > 0);
    });
}

/// The toolkit's own procedure writes Success rows under (ServerID, DBAToolsDatabase) with no
/// word of which instance they belong to; a DBA may edit the ledger. perfcopy skips nothing
/// because of either.
#[test]
fn ledger_rows_perfcopy_did_not_write_never_make_it_skip_rows() {
    let t = tempfile::tempdir().unwrap();
    let mut tgt = Target::new(t.path(), false);
    let a = server_named("SQL01", "SQL01");
    let mut rows = series("SQL01", T0, 100, 1, 20);
    seed(&a, t.path(), "DBATools", &rows, true);
    let c = conn(&a, "DBATools");
    tgt.copy(&[(c.clone(), rows.clone())]);

    // The toolkit's procedure synced "this" server far ahead (another instance, really).
    tgt.sql("INSERT INTO dbo.DBAToolsSyncLog (ServerID, ServerName, DBAToolsDatabase, LastSyncUTC, LastRunID, RowsCopied, SyncStatus) VALUES (1, N'SQL01', N'DBATools', SYSUTCDATETIME(), 999999, 5, 'Success')");
    let more = series("SQL01", T0 + 100 * MIN5, 50, 101, 21);
    add_rows(&a, t.path(), "DBATools", &more, true);
    rows.extend(more);
    let r = tgt.copy(&[(c.clone(), rows.clone())]);
    assert_eq!(wm(&r, 0).0, "used", "perfcopy's own watermark (100), not the toolkit's row: {r}");
    assert_eq!(written(&r), 50);

    // A DBA moved every ledger row forward by hand: perfcopy's companion row disagrees.
    tgt.sql("UPDATE dbo.DBAToolsSyncLog SET LastRunID = 999999");
    let more = series("SQL01", T0 + 150 * MIN5, 30, 151, 22);
    add_rows(&a, t.path(), "DBATools", &more, true);
    rows.extend(more);
    let r = tgt.copy(&[(c.clone(), rows.clone())]);
    let (status, reason) = wm(&r, 0);
    assert_eq!(status, "set_aside");
    assert!(reason.contains("says LastRunID 999999, perfcopy recorded 150"), "{reason}");
    assert_eq!(written(&r), 30);

    // Ledger rows deleted (the toolkit's retention clean-up): nothing to vouch for the watermark.
    tgt.sql("DELETE FROM dbo.DBAToolsSyncLog");
    let r = tgt.copy(&[(c, rows)]);
    let (status, reason) = wm(&r, 0);
    assert_eq!(status, "set_aside");
    assert!(reason.contains("no longer exists"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// Random histories

/// One step of a history over a few instances, each with one DBATools database.
#[derive(Debug, Clone)]
enum Step {
    /// The collector adds `n` snapshots.
    Append { at: usize, n: usize },
    /// `n` of another instance's newest rows land here too (a restored copy's overlap).
    Overlap { at: usize, from: usize, n: usize },
    /// The VM of `from` is cloned over `at` (disk copy); `renamed`: the host got a new name
    /// (@@SERVERNAME stays the clone's).
    Clone { from: usize, at: usize, renamed: bool },
    /// The table is dropped and created again (IDENTITY back at 1).
    Recreate { at: usize },
    /// TRUNCATE TABLE (same table, IDENTITY back at 1).
    Truncate { at: usize },
    /// BACKUP DATABASE.
    Backup { at: usize },
    /// RESTORE DATABASE from one of the backups taken so far (any instance's).
    Restore { at: usize, backup: usize },
    /// The server is renamed (sp_dropserver/sp_addserver and the host).
    Rename { at: usize },
    /// perfcopy copies these instances (bit mask, in instance order) into target `target`.
    Copy { mask: u8, target: usize },
}

const INSTANCES: usize = 3;

fn step() -> impl Strategy<Value = Step> {
    let i = 0..INSTANCES;
    prop_oneof![
        4 => (i.clone(), 1usize..70).prop_map(|(at, n)| Step::Append { at, n }),
        1 => (i.clone(), i.clone(), 1usize..30).prop_map(|(at, from, n)| Step::Overlap { at, from, n }),
        1 => (i.clone(), i.clone(), any::<bool>()).prop_map(|(from, at, renamed)| Step::Clone { from, at, renamed }),
        1 => i.clone().prop_map(|at| Step::Recreate { at }),
        1 => i.clone().prop_map(|at| Step::Truncate { at }),
        1 => i.clone().prop_map(|at| Step::Backup { at }),
        1 => (i.clone(), 0usize..8).prop_map(|(at, backup)| Step::Restore { at, backup }),
        1 => i.clone().prop_map(|at| Step::Rename { at }),
        4 => (1u8..8, 0usize..2).prop_map(|(mask, target)| Step::Copy { mask, target }),
    ]
}

/// One instance as the test knows it: the rows its table holds now.
struct Instance {
    srv: TestServer,
    rows: Vec<SrcRow>,
}

impl Instance {
    fn next_id(&self) -> i64 {
        self.rows.iter().map(|r| r.run_id).max().unwrap_or(0) + 1
    }
}

/// Runs a history; after every copy the target equals the model (checked in [`Target::copy`]).
fn run_history(steps: &[Step], seed: u64) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let names = ["SQL01", "SQL02", "SQLX"];
    let mut inst: Vec<Instance> = (0..INSTANCES)
        .map(|i| {
            let srv = server_named(names[i], names[i]);
            srv.create_dbatools("DBATools", true);
            create_kids(&srv, "DBATools");
            Instance { srv, rows: Vec::new() }
        })
        .collect();
    let mut targets = [Target::new(&dir.join("t0"), true), Target::new(&dir.join("t1"), false)];
    let mut backups: Vec<(tds_test_server::DatabaseCopy, Vec<SrcRow>)> = Vec::new();
    let mut clock = T0;
    for (k, st) in steps.iter().enumerate() {
        let salt = seed.wrapping_mul(31).wrapping_add(k as u64);
        match *st {
            Step::Append { at, n } => {
                let name = inst[at].srv.server_name();
                let rows = series(&name, clock + (salt % 997) as i64, n, inst[at].next_id(), salt % 1000);
                clock += n as i64 * MIN5;
                add_rows(&inst[at].srv, dir, "DBATools", &rows, true);
                inst[at].rows.extend(rows);
            }
            Step::Overlap { at, from, n } => {
                let src = &inst[from].rows;
                let tail = src[src.len().saturating_sub(n)..].to_vec();
                if tail.is_empty() {
                    continue;
                }
                let rows = copy_rows(&tail, inst[at].next_id(), 3, None);
                add_rows(&inst[at].srv, dir, "DBATools", &rows, true);
                inst[at].rows.extend(rows);
            }
            Step::Clone { from, at, renamed } => {
                if from == at {
                    continue;
                }
                let copy = inst[from].srv.backup_database("DBATools").unwrap();
                inst[at].srv.attach_database_copy("DBATools", &copy);
                let (name, machine) = (inst[from].srv.server_name(), inst[from].srv.server_name());
                inst[at].srv.set_server_name(&name);
                if !renamed {
                    inst[at].srv.set_machine_name(&machine);
                }
                inst[at].rows = inst[from].rows.clone();
            }
            Step::Recreate { at } => {
                inst[at].srv.create_dbatools("DBATools", true);
                create_kids(&inst[at].srv, "DBATools");
                inst[at].rows.clear();
            }
            Step::Truncate { at } => {
                truncate(&inst[at].srv, "DBATools");
                inst[at].rows.clear();
            }
            Step::Backup { at } => backups.push((inst[at].srv.backup_database("DBATools").unwrap(), inst[at].rows.clone())),
            Step::Restore { at, backup } => {
                if backups.is_empty() {
                    continue;
                }
                let (copy, rows) = &backups[backup % backups.len()];
                inst[at].srv.restore_database("DBATools", copy);
                inst[at].rows = rows.clone();
            }
            Step::Rename { at } => {
                let name = inst[at].srv.server_name();
                let renamed = if name.ends_with('N') { name.trim_end_matches('N').to_string() } else { format!("{name}N") };
                let renamed = if ALIASES.iter().any(|(n, _)| *n == renamed) { renamed } else { name };
                inst[at].srv.set_server_name(&renamed);
                inst[at].srv.set_machine_name(&renamed);
            }
            Step::Copy { mask, target } => {
                let sources: Vec<(String, Vec<SrcRow>)> = (0..INSTANCES)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| (conn(&inst[i].srv, "DBATools"), inst[i].rows.clone()))
                    .collect();
                targets[target].copy(&sources);
            }
        }
    }
    // Whatever happened, a last copy of everything into both targets leaves both exact.
    for tgt in targets.iter_mut() {
        let all: Vec<(String, Vec<SrcRow>)> = inst.iter().map(|i| (conn(&i.srv, "DBATools"), i.rows.clone())).collect();
        tgt.copy(&all);
    }
}

proptest! {
    // HISTORY_CASES=N runs more cases (CI: 12).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("HISTORY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        max_shrink_iters: 40,
        ..ProptestConfig::default()
    })]

    /// Random histories of three instances (clone, re-create, truncate, restore, append,
    /// overlap, rename, copy, in any order): after every copy, into a stage and into a
    /// MonitoringDB, the target equals the model.
    #[test]
    fn random_histories_lose_and_double_nothing(steps in prop::collection::vec(step(), 1..14), seed in any::<u64>()) {
        run_history(&steps, seed);
    }
}

/// One fixed history through every step kind, so each is run on every CI run whatever the
/// random cases draw.
#[test]
fn a_history_with_every_step() {
    use Step::*;
    run_history(
        &[
            Append { at: 0, n: 60 },
            Append { at: 1, n: 30 },
            Backup { at: 0 },
            Copy { mask: 0b011, target: 1 },
            Copy { mask: 0b011, target: 0 },
            Clone { from: 0, at: 2, renamed: false },
            Append { at: 0, n: 20 },
            Append { at: 2, n: 25 },
            Copy { mask: 0b101, target: 1 },
            Copy { mask: 0b100, target: 0 },
            Overlap { at: 1, from: 0, n: 10 },
            Restore { at: 0, backup: 0 },
            Append { at: 0, n: 40 },
            Copy { mask: 0b111, target: 1 },
            Truncate { at: 1 },
            Append { at: 1, n: 15 },
            Recreate { at: 2 },
            Append { at: 2, n: 5 },
            Rename { at: 0 },
            Append { at: 0, n: 10 },
            Copy { mask: 0b111, target: 0 },
            Copy { mask: 0b111, target: 1 },
            Clone { from: 1, at: 0, renamed: true },
            Append { at: 0, n: 12 },
            Copy { mask: 0b011, target: 1 },
        ],
        7,
    );
}
