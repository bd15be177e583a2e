//! Crash consistency, measured: a copy killed with SIGKILL at a random moment, then run again,
//! must leave exactly what a run that was never interrupted leaves (same rows, no key twice,
//! nothing lost), on both targets. And Ctrl-C on the MonitoringDB target stops within a couple
//! of seconds with exit 130, keeping only whole committed batches.
//!
//! The SIGKILL trials run with child tables (generated at a small `--children-scale`,
//! `CRASH_CHILDREN_SCALE`, default 0.01): after a kill no child row is held twice or without
//! its run, and after the re-run every child table equals the uninterrupted run's, which
//! itself equals an independent model built from the generated files (tests/common/kids.rs).
//!
//! CI runs a few trials on tens of thousands of rows; `scripts/crash-trials.sh` runs these same
//! tests in a release build with `CRASH_TRIALS` (default here 3), `CRASH_ROWS` and `CRASH_SEED`
//! (default: from the clock; always printed, so a failing trial can be replayed).

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mssql::max_run;
use common::kids;
use common::tds_bin::ServerProc;
use common::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    let s = env_num("CRASH_SEED", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000);
    println!("crash trials: seed {s} (replay with CRASH_SEED={s})");
    s
}

/// Bytes of child rows per unit in the crash trials (`PERFCOPY_TEST_CHILD_UNIT_BYTES`): small,
/// so batches go out in parts of a few runs and a kill can land between the parts of one batch.
fn unit_bytes() -> String {
    std::env::var("CRASH_UNIT_BYTES").unwrap_or_else(|_| "20000".into())
}

fn spawn_copy(args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("perfcopy"))
        .arg("copy")
        .args(args)
        .args(["--progress", "off"])
        .env_remove("RUST_LOG")
        .env("PERFCOPY_TEST_CHILD_UNIT_BYTES", unit_bytes())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs a copy to the end; panics on failure. Returns how long it took.
fn run_copy_ok(args: &[&str]) -> Duration {
    run_copy_output(args).0
}

/// Runs a copy to the end; panics on failure. Returns how long it took, and its stderr.
fn run_copy_output(args: &[&str]) -> (Duration, String) {
    let started = Instant::now();
    let o = spawn_copy(args).wait_with_output().unwrap();
    assert!(o.status.success(), "copy failed ({:?}): {}", o.status.code(), stderr(&o));
    (started.elapsed(), stderr(&o))
}

/// Spawns a copy, SIGKILLs it after `after` (if still running); true when it was killed
/// rather than already finished.
fn kill_after(args: &[&str], after: Duration) -> bool {
    let mut child = spawn_copy(args);
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2).min(deadline.saturating_duration_since(Instant::now())));
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    killed
}

/// Runs `trials` trials, each returning Err(description) on a mismatch; a panic inside a trial
/// counts as a mismatch too. Prints one line per trial and the summary the script greps for.
fn run_trials(target: &str, trials: u64, mut trial: impl FnMut(u64) -> Result<String, String>) -> u64 {
    let mut mismatches = 0;
    for i in 0..trials {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| trial(i))).unwrap_or_else(|p| {
            Err(p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
        });
        match r {
            Ok(note) => println!("{target} trial {i}: ok ({note})"),
            Err(e) => {
                mismatches += 1;
                println!("{target} trial {i}: MISMATCH: {e}");
            }
        }
    }
    println!("{target}: trials: {trials}, mismatches: {mismatches}");
    mismatches
}

fn diff(got: &BTreeMap<(i32, i64), Row>, want: &BTreeMap<(i32, i64), Row>) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let missing = want.keys().filter(|k| !got.contains_key(k)).count();
    let extra = got.keys().filter(|k| !want.contains_key(k)).count();
    let differ = want.iter().filter(|(k, v)| got.get(k).is_some_and(|g| g != *v)).count();
    Err(format!("{} rows vs {} in the uninterrupted run: {missing} missing, {extra} unexpected, {differ} differing", got.len(), want.len()))
}

/// The child tables the trials generate and check.
const KID_TABLES: [&str; 5] = ["PerfSnapshotDB", "PerfSnapshotWaitStats", "PerfSnapshotWorkload", "PerfSnapshotErrorLog", "PerfSnapshotMemory"];

fn children_scale() -> String {
    std::env::var("CRASH_CHILDREN_SCALE").unwrap_or_else(|_| "0.01".into())
}

/// The MonitoringDB trial's: the long NVARCHAR(MAX) values and the most rows per run. Each
/// table costs every unit a bulk load, so fewer tables keep the trial near its old time.
const KID_TABLES_MSSQL: [&str; 2] = ["PerfSnapshotWaitStats", "PerfSnapshotWorkload"];

/// Generated sources, each with the child tables `children` (none when empty) at
/// [`children_scale`].
fn generate(out: &Path, servers: u32, rows: u64, seed: u32, children: &[&str]) -> Vec<std::path::PathBuf> {
    let scale = children_scale();
    let list = children.join(",");
    let kids: Vec<&str> = if children.is_empty() { vec!["--child-tables", "none"] } else { vec!["--child-tables", &list, "--children-scale", &scale] };
    let mut args = vec!["generate", "--out", s(out)];
    let (servers, rows, seed) = (servers.to_string(), rows.to_string(), seed.to_string());
    args.extend(["--servers", &servers, "--rows", &rows, "--overlap", "0.05", "--seed", &seed]);
    args.extend(kids);
    let o = perfcopy(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    parquet_files(out)
}

#[test]
fn stage_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run() {
    let (trials, rows, seed) = (env_num("CRASH_TRIALS", 3), env_num("CRASH_ROWS", 40_000), seed());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let files = generate(&src, 4, rows, 7, &KID_TABLES);
    let batch = env_num("CRASH_BATCH_ROWS", (rows / 40).clamp(500, 32_768)).to_string();
    let args = |stage: &Path| -> Vec<String> {
        ["--from", s(&src), "--stage", s(stage), "--register-servers", "--batch-rows", &batch, "--row-group-rows", "8192"].iter().map(|a| a.to_string()).collect()
    };
    let reference = t.path().join("reference");
    let ref_args = args(&reference);
    let took = run_copy_ok(&ref_args.iter().map(String::as_str).collect::<Vec<_>>());
    let want = by_key(&read_stage(&reference));
    // The uninterrupted run itself against the independent model.
    let reg: NameMap = read_registry(&reference.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect();
    let model = expected(&files.iter().map(|f| read_source(f)).collect::<Vec<_>>(), &reg, Win::default(), &BTreeMap::new());
    assert_rows_eq("uninterrupted stage", &want, &model.stage);
    let sources: Vec<(Vec<SrcRow>, std::path::PathBuf)> = files.iter().map(|f| (read_source(f), f.clone())).collect();
    let want_kids: Vec<kids::ChildSet> = KID_TABLES.iter().map(|t| kids::stage_rows(&reference, t)).collect();
    for (t, got) in KID_TABLES.iter().zip(&want_kids) {
        kids::diff(&format!("uninterrupted stage, {t}"), got, &kids::model(&sources, &reg, want.keys().copied(), t)).unwrap();
    }
    let n_kids: usize = want_kids.iter().flat_map(|k| k.values()).map(Vec::len).sum();
    assert!(n_kids > 0, "the trials need child rows");
    println!("stage: {} source rows, {} stage rows, {n_kids} child rows, uninterrupted copy {:.2} s", rows, want.len(), took.as_secs_f64());

    let mismatches = run_trials("stage", trials, |i| {
        let stage = t.path().join(format!("trial-{i}"));
        let a = args(&stage);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let at = Duration::from_micros(mix(seed, i) % (took.as_micros() as u64 * 4 / 5).max(1));
        let killed = kill_after(&a, at);
        let files_after_kill = walk_files(&stage).len();
        // What the kill left: no child row the uninterrupted run lacks, none twice.
        for (t, w) in KID_TABLES.iter().zip(&want_kids) {
            kids::within(&format!("stage after the kill, {t}"), &kids::stage_rows(&stage, t), w)?;
        }
        run_copy_ok(&a);
        let got = by_key(&read_stage(&stage)); // panics on leftovers or a key held twice
        diff(&got, &want)?;
        for (t, w) in KID_TABLES.iter().zip(&want_kids) {
            kids::diff(&format!("stage after the re-run, {t}"), &kids::stage_rows(&stage, t), w)?;
        }
        let v = perfcopy(&["verify", "--from", s(&src), "--stage", s(&stage)]);
        if !v.status.success() {
            return Err(format!("verify failed: {}", stderr(&v)));
        }
        let _ = std::fs::remove_dir_all(&stage);
        Ok(format!("killed at {:.0} ms{}, {files_after_kill} files after the kill", at.as_secs_f64() * 1e3, if killed { "" } else { " (had already finished)" }))
    });
    assert_eq!(mismatches, 0, "seed {seed}");
}


/// The moment a random SIGKILL rarely hits: the stage commit's renames (run files first, then
/// each child table's), and the gap between the last rename and the watermark file. The copy
/// aborts right after rename N (perfcopy's test hook), for N from the first to the last; each
/// time the stage holds no child row twice or without the uninterrupted run's, and a re-run
/// leaves exactly the uninterrupted run's rows and children.
#[test]
fn stage_abort_between_the_commits_renames_then_rerun_equals_an_uninterrupted_run() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    generate(&src, 3, 3_000, 11, &KID_TABLES);
    let args = |stage: &Path| -> Vec<String> { ["--from", s(&src), "--stage", s(stage), "--register-servers", "--batch-rows", "500"].iter().map(|a| a.to_string()).collect() };
    let reference = t.path().join("reference");
    run_copy_ok(&args(&reference).iter().map(String::as_str).collect::<Vec<_>>());
    let want = by_key(&read_stage(&reference));
    let want_kids: Vec<kids::ChildSet> = KID_TABLES.iter().map(|t| kids::stage_rows(&reference, t)).collect();
    let abort_at = |stage: &Path, n: usize| -> (bool, String) {
        let a = args(stage);
        let o = Command::new(assert_cmd::cargo::cargo_bin("perfcopy")).arg("copy").args(&a).args(["--progress", "off"]).env("PERFCOPY_TEST_ABORT_AFTER_RENAMES", n.to_string()).output().unwrap();
        (o.status.success(), stderr(&o))
    };
    // The first trial says how many renames a commit makes.
    let (ok, err) = abort_at(&t.path().join("probe"), 1);
    assert!(!ok, "the hook did not abort: {err}");
    let total: usize = err.split(" of ").nth(1).and_then(|r| r.trim().parse().ok()).unwrap_or_else(|| panic!("no rename count in: {err}"));
    assert!(total > KID_TABLES.len(), "{total} renames: expected files for runs and {} child tables", KID_TABLES.len());
    let mut points: Vec<usize> = vec![1, 2, total / 4, total / 3, total / 2, 2 * total / 3, total - 1, total];
    points.sort();
    points.dedup();
    for n in points.into_iter().filter(|&n| n >= 1) {
        let stage = t.path().join(format!("abort-{n}"));
        let (ok, err) = abort_at(&stage, n);
        assert!(!ok && err.contains(&format!("aborting after rename {n} of {total}")), "rename {n}: {err}");
        for (tb, w) in KID_TABLES.iter().zip(&want_kids) {
            kids::within(&format!("stage after an abort at rename {n} of {total}, {tb}"), &kids::stage_rows(&stage, tb), w).unwrap();
        }
        run_copy_ok(&args(&stage).iter().map(String::as_str).collect::<Vec<_>>());
        diff(&by_key(&read_stage(&stage)), &want).unwrap_or_else(|e| panic!("rename {n} of {total}: {e}"));
        for (tb, w) in KID_TABLES.iter().zip(&want_kids) {
            kids::diff(&format!("re-run after an abort at rename {n} of {total}, {tb}"), &kids::stage_rows(&stage, tb), w).unwrap();
        }
        println!("abort after rename {n} of {total}: re-run equals the uninterrupted run");
    }
}

/// Sources for the MonitoringDB trials: DBATools on a `tds_test_server` process seeded with the
/// first generated file, and the second file as a Parquet source that overlaps it.
struct MssqlSetup {
    _t: tempfile::TempDir,
    src: ServerProc,
    parquet: std::path::PathBuf,
    sql_rows: Vec<SrcRow>,
    parquet_rows: Vec<SrcRow>,
    /// The file DBATools was seeded from (with its child tables).
    sql_file: std::path::PathBuf,
}

fn mssql_setup(rows: u64, servers: u32, children: &[&str]) -> MssqlSetup {
    let t = tempfile::tempdir().unwrap();
    let files = generate(&t.path().join("src"), servers, rows, 11, children);
    // Seeds the first file's child tables too (its `NAME/` folder).
    let src = ServerProc::start(Some(&files[0]));
    MssqlSetup { sql_rows: read_source(&files[0]), parquet_rows: read_source(&files[1]), parquet: files[1].clone(), sql_file: files[0].clone(), src, _t: t }
}

#[test]
fn monitoringdb_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run() {
    // 10,000 rows (30,000 before child tables): with children a copy into the test server costs
    // about the square of its rows (each unit reads back its runs' MonitoringDB IDs, a scan of
    // the test server's PerfSnapshotRun), so a third of the rows keep the trial near its old time.
    let (trials, rows, seed) = (env_num("CRASH_TRIALS", 3), env_num("CRASH_ROWS", 10_000), seed());
    let m = mssql_setup(rows, 3, &KID_TABLES_MSSQL);
    let batch = env_num("CRASH_BATCH_ROWS", (rows / 60).clamp(250, 32_768)).to_string();
    let from = m.src.conn("DBATools");
    let args = |tgt: &ServerProc| -> Vec<String> {
        ["--from", &from, "--from", s(&m.parquet), "--to", &tgt.conn("MonitoringDB"), "--register-servers", "--batch-rows", &batch]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let max_sql_run = max_run(&m.sql_rows);

    // MonitoringDB with the child tables (empty), shaped as DBATools has them.
    let target = || ServerProc::start_with(None, &["--child-tables", s(&m.sql_file)]);
    let reference = target();
    let a = args(&reference);
    let took = run_copy_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (want, doubled) = reference.rows("MonitoringDB");
    assert_eq!(doubled, 0, "the uninterrupted run doubled keys");
    // Against the model, with the IDs the target gave the names.
    let reg: NameMap = want.values().map(|r| (fold(&r.server_name), r.server_id)).collect();
    let model = expected(&[m.sql_rows.clone(), m.parquet_rows.clone()], &reg, Win::default(), &BTreeMap::new());
    assert_rows_eq("uninterrupted MonitoringDB", &want, &model.stage);
    assert_eq!(reference.last_success("MonitoringDB").get("DBATools"), Some(&Some(max_sql_run)), "uninterrupted ledger");
    let sources = vec![(m.sql_rows.clone(), m.sql_file.clone()), (m.parquet_rows.clone(), m.parquet.clone())];
    let want_kids: Vec<kids::ChildSet> = KID_TABLES_MSSQL
        .iter()
        .map(|t| {
            let (got, orphans) = reference.child_rows("MonitoringDB", t);
            assert_eq!(orphans, 0, "{t}: the uninterrupted run left child rows without their run");
            kids::diff(&format!("uninterrupted MonitoringDB, {t}"), &got, &kids::model(&sources, &reg, want.keys().copied(), t)).unwrap();
            got
        })
        .collect();
    let n_kids: usize = want_kids.iter().flat_map(|k| k.values()).map(Vec::len).sum();
    assert!(n_kids > 0, "the trials need child rows");
    drop(reference);
    println!("monitoringdb: {} source rows, {} target rows, uninterrupted copy {:.2} s", m.sql_rows.len() + m.parquet_rows.len(), want.len(), took.as_secs_f64());

    let mismatches = run_trials("monitoringdb", trials, |i| {
        let tgt = target();
        let a = args(&tgt);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let at = Duration::from_micros(mix(seed, i) % (took.as_micros() as u64 * 4 / 5).max(1));
        let killed = kill_after(&a, at);
        // What the killed run left: only rows of the uninterrupted result, no key twice, and every
        // SQL source row up to the ledger's LastRunID present (a batch commits with its watermark).
        std::thread::sleep(Duration::from_millis(100));
        let (mid, doubled) = tgt.rows("MonitoringDB");
        if doubled > 0 {
            return Err(format!("{doubled} keys held twice after the kill"));
        }
        if let Some((k, _)) = mid.iter().find(|(k, r)| want.get(k) != Some(r)) {
            return Err(format!("after the kill the target holds {k:?}, which the uninterrupted run does not have like this"));
        }
        for (t, w) in KID_TABLES_MSSQL.iter().zip(&want_kids) {
            let (got, orphans) = tgt.child_rows("MonitoringDB", t);
            if orphans > 0 {
                return Err(format!("{t}: {orphans} child rows without their run after the kill"));
            }
            kids::within(&format!("MonitoringDB after the kill, {t}"), &got, w)?;
        }
        let last = tgt.last_success("MonitoringDB").get("DBATools").copied().flatten();
        if let Some(l) = last {
            let lost = m.sql_rows.iter().filter(|r| r.run_id <= l && !mid.contains_key(&(reg[&fold(&r.server_name)], r.snapshot_ms))).count();
            if lost > 0 {
                return Err(format!("ledger says LastRunID {l} but {lost} source rows up to it are missing"));
            }
        }
        // perfcopy's companion rows move with their ledger rows (one transaction) and point at
        // the source row of that ID.
        for (id, run, ts, ledger) in tgt.companions("MonitoringDB") {
            if ledger.as_ref().map(|l| l.0) != Some(Some(run)) {
                return Err(format!("companion of SyncLogID {id} says LastRunID {run}, its ledger row {ledger:?}"));
            }
            if !m.sql_rows.iter().any(|r| r.run_id == run && r.snapshot_ms == ts) {
                return Err(format!("companion of SyncLogID {id} points at row {run} with a SnapshotUTC the source does not have there"));
            }
        }
        let (_, rerun) = run_copy_output(&a);
        // A watermark set before the kill is checked and used by the re-run.
        if let Some(l) = last {
            if !rerun.contains(&format!("resumed after PerfSnapshotRunID {l} ")) {
                return Err(format!("the re-run did not resume after the ledger's LastRunID {l}: {rerun}"));
            }
        }
        let (got, doubled) = tgt.rows("MonitoringDB");
        if doubled > 0 {
            return Err(format!("{doubled} keys held twice after the re-run"));
        }
        diff(&got, &want)?;
        for (t, w) in KID_TABLES_MSSQL.iter().zip(&want_kids) {
            let (got, orphans) = tgt.child_rows("MonitoringDB", t);
            if orphans > 0 {
                return Err(format!("{t}: {orphans} child rows without their run after the re-run"));
            }
            kids::diff(&format!("MonitoringDB after the re-run, {t}"), &got, w)?;
        }
        let ledger = tgt.last_success("MonitoringDB").get("DBATools").copied().flatten();
        if ledger != Some(max_sql_run) {
            return Err(format!("last Success LastRunID {ledger:?}, source max PerfSnapshotRunID {max_sql_run}"));
        }
        Ok(format!(
            "killed at {:.0} ms{}: {} rows and LastRunID {last:?} after the kill",
            at.as_secs_f64() * 1e3,
            if killed { "" } else { " (had already finished)" },
            mid.len()
        ))
    });
    assert_eq!(mismatches, 0, "seed {seed}");
}

#[test]
fn monitoringdb_sigint_exits_130_quickly_keeping_whole_batches_and_a_rerun_completes() {
    let rows = env_num("CRASH_SIGINT_ROWS", 60_000);
    let m = mssql_setup(rows, 2, &[]);
    let tgt = ServerProc::start(None);
    let from = m.src.conn("DBATools");
    let to = tgt.conn("MonitoringDB");
    let args = ["--from", from.as_str(), "--to", to.as_str(), "--register-servers", "--batch-rows", "200"];
    let mut child = spawn_copy(&args);
    let start = Instant::now();
    while tgt.count("MonitoringDB") < 400 {
        assert!(child.try_wait().unwrap().is_none(), "the copy finished before it could be interrupted; give it more rows");
        assert!(start.elapsed() < Duration::from_secs(120), "no batch committed within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(signalled.elapsed() < Duration::from_secs(3), "still running 3 s after SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stopped_in = signalled.elapsed();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    println!("SIGINT: exit {:?} after {:.0} ms", status.code(), stopped_in.as_secs_f64() * 1e3);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");

    // Only whole committed batches: the target equals the model for exactly the source rows up
    // to the ledger's LastRunID.
    let (got, doubled) = tgt.rows("MonitoringDB");
    assert_eq!(doubled, 0);
    let reg: NameMap = got.values().map(|r| (fold(&r.server_name), r.server_id)).collect();
    let last = tgt.last_success("MonitoringDB").get("DBATools").copied().flatten().expect("rows were committed without a Success ledger row");
    let done: Vec<SrcRow> = m.sql_rows.iter().filter(|r| r.run_id <= last).cloned().collect();
    assert!(done.len() < m.sql_rows.len(), "the whole source was copied before the interrupt");
    assert_rows_eq("MonitoringDB after SIGINT", &got, &expected(&[done], &reg, Win::default(), &BTreeMap::new()).stage);

    run_copy_ok(&args);
    let (got, doubled) = tgt.rows("MonitoringDB");
    assert_eq!(doubled, 0);
    let reg: NameMap = got.values().map(|r| (fold(&r.server_name), r.server_id)).collect();
    assert_rows_eq("MonitoringDB after the re-run", &got, &expected(std::slice::from_ref(&m.sql_rows), &reg, Win::default(), &BTreeMap::new()).stage);
    assert_eq!(tgt.last_success("MonitoringDB").get("DBATools"), Some(&Some(max_run(&m.sql_rows))));
}
