//! Several perfcopy runs on one target at once (issue 15): each source is copied by one run
//! at a time (a second run of it is refused, naming the holder), runs of other sources go on,
//! and runs that copy rows of one server from different sources (a restored copy) take turns,
//! so nothing is doubled. Into a stage and into a MonitoringDB; two and three processes, with
//! overlapping and disjoint source lists, and kills. The target is compared with the model
//! (tests/common's survivor rule over every source row; the overlapping rows are exact copies,
//! so which run gets there first does not change the model).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mssql::*;
use common::*;
use tds_test_server::TestServer;

/// Sources on one slow test server (each response delayed, so a copy takes seconds): SQL01's
/// own DBATools, SQL02's, and a restore of half of SQL01's history (other run IDs, same rows).
struct Sources {
    srv: TestServer,
    rows: Vec<Vec<SrcRow>>,
    conns: Vec<String>,
}

fn sources(dir: &Path) -> Sources {
    let srv = server();
    let a = series("SQL01", T0, 240, 1, 1);
    let b = series("SQL02", T0, 200, 1, 2);
    let c = copy_rows(&a[100..220], 1, 0, None);
    for (db, rows) in [("DB_A", &a), ("DB_B", &b), ("DB_C", &c)] {
        seed(&srv, dir, db, rows, true);
    }
    srv.faults().delay_responses(Some(Duration::from_millis(20)));
    let conns = ["DB_A", "DB_B", "DB_C"].iter().map(|db| conn(&srv, db)).collect();
    Sources { srv, rows: vec![a, b, c], conns }
}

enum Tgt {
    Stage(std::path::PathBuf),
    Mdb(TestServer),
}

impl Tgt {
    fn new(dir: &Path, stage: bool) -> Tgt {
        if stage {
            Tgt::Stage(dir.join("stage"))
        } else {
            let t = server();
            seed_target(&t, "MonitoringDB", &[], &[]);
            Tgt::Mdb(t)
        }
    }
    fn args(&self) -> Vec<String> {
        match self {
            Tgt::Stage(p) => vec!["--stage".into(), s(p).into()],
            Tgt::Mdb(t) => vec!["--to".into(), conn(t, "MonitoringDB")],
        }
    }
    fn rows(&self) -> BTreeMap<(i32, i64), Row> {
        match self {
            Tgt::Stage(p) => by_key(&read_stage(p)),
            Tgt::Mdb(t) => target_rows(t, "MonitoringDB"),
        }
    }
    fn registry(&self) -> NameMap {
        match self {
            Tgt::Stage(p) => read_registry(&p.join("servers.csv")).into_iter().map(|(n, id)| (fold(&n), id)).collect(),
            Tgt::Mdb(t) => servers_table(t, "MonitoringDB"),
        }
    }
    /// Whether the run with process `pid` has named itself as a lock holder.
    fn names_holder(&self, pid: u32) -> bool {
        let me = format!("perfcopy pid {pid} ");
        match self {
            Tgt::Stage(p) => walk_files(&p.join("_perfcopy").join("locks")).iter().any(|f| std::fs::read_to_string(f).unwrap_or_default().starts_with(&me)),
            Tgt::Mdb(t) => t.has_table("MonitoringDB", "dbo.PerfcopyLocks") && {
                let b = t.table_batch("MonitoringDB", "dbo.PerfcopyLocks").unwrap();
                let h = b.column(1).as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone();
                h.iter().flatten().any(|v| v.starts_with(&me))
            },
        }
    }
}

fn spawn(from: &[&str], tgt: &Tgt) -> Child {
    spawn_batches(from, tgt, 20)
}

/// [`spawn`] reading `batch_rows` rows per page (fewer: a slower run).
fn spawn_batches(from: &[&str], tgt: &Tgt, batch_rows: usize) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("perfcopy"));
    cmd.args(["copy", "--register-servers", "--batch-rows", &batch_rows.to_string(), "--progress", "plain"]);
    for f in from {
        cmd.args(["--from", f]);
    }
    cmd.args(tgt.args()).env_remove("RUST_LOG").stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn finish(c: Child) -> Output {
    c.wait_with_output().unwrap()
}

/// Waits until `f` holds (at most 20 s).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The model after every source was copied once (in any order: their shared rows are equal).
fn model(src: &Sources, tgt: &Tgt) -> BTreeMap<(i32, i64), Row> {
    expected(&src.rows, &tgt.registry(), Win::default(), &BTreeMap::new()).stage
}

fn each_target(f: impl Fn(&Path, Tgt)) {
    for stage in [true, false] {
        let t = tempfile::tempdir().unwrap();
        f(t.path(), Tgt::new(t.path(), stage));
    }
}

#[test]
fn a_second_run_of_a_source_is_refused_naming_the_run_that_holds_it() {
    each_target(|dir, tgt| {
        let src = sources(dir);
        let first = spawn_batches(&[&src.conns[0]], &tgt, 2);
        let pid = first.id();
        wait_for("the first run to name itself as the holder", || tgt.names_holder(pid));
        // The same source again, and with another one: refused, nothing written by it.
        for from in [vec![src.conns[0].as_str()], vec![src.conns[1].as_str(), src.conns[0].as_str()]] {
            let o = finish(spawn(&from, &tgt));
            let err: String = stderr(&o).lines().filter(|l| !l.contains(" WARN ")).collect::<Vec<_>>().join("\n");
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert!(err.contains("is being copied into this") && err.contains(&format!("perfcopy pid {pid} ")), "{err}");
            assert!(!err.contains(PW), "{err}");
        }
        let o = finish(first);
        assert!(o.status.success(), "{}", stderr(&o));
        // Afterwards each goes through, and the target is the model of A and B.
        let o = finish(spawn(&[&src.conns[1], &src.conns[0]], &tgt));
        assert!(o.status.success(), "{}", stderr(&o));
        let want = expected(&src.rows[..2], &tgt.registry(), Win::default(), &BTreeMap::new()).stage;
        assert_rows_eq("after the refused runs", &tgt.rows(), &want);
    });
}

#[test]
fn runs_of_disjoint_sources_proceed_at_once_and_overlapping_servers_take_turns() {
    each_target(|dir, tgt| {
        let src = sources(dir);
        // Three processes at once: A and C hold rows of one server (C is a restored copy of
        // half of A); B another server.
        let started = Instant::now();
        let runs: Vec<Child> = (0..3).map(|i| spawn_batches(&[&src.conns[i]], &tgt, 5)).collect();
        let outs: Vec<Output> = runs.into_iter().map(finish).collect();
        let took = started.elapsed();
        for (i, o) in outs.iter().enumerate() {
            assert!(o.status.success(), "run {i}: {}", stderr(o));
        }
        assert_rows_eq("three concurrent runs", &tgt.rows(), &model(&src, &tgt));
        // A and C took turns on SQL01 (one waited, and said so), or did not meet at all.
        let waited = outs.iter().filter(|o| stderr(o).contains("waiting for another")).count();
        println!("3 runs in {:.1} s, {waited} waited for a server", took.as_secs_f64());
        assert!(waited <= 1, "only A and C share a server");
        assert!(stderr(&outs[1]).contains("waiting for another") == false, "B shares no server with A or C");
    });
}

#[test]
fn concurrent_runs_with_overlapping_lists_and_kills_end_equal_to_the_model() {
    each_target(|dir, tgt| {
        let src = sources(dir);
        let (a, b, c) = (src.conns[0].as_str(), src.conns[1].as_str(), src.conns[2].as_str());
        // Round 1: [A, B] and [B, C] at once (one is refused for B, or both get through one
        // after the other), and [C] killed mid-run.
        let p1 = spawn(&[a, b], &tgt);
        let p2 = spawn(&[b, c], &tgt);
        let mut p3 = spawn(&[c], &tgt);
        std::thread::sleep(Duration::from_millis(300 + (std::process::id() % 400) as u64));
        let _ = p3.kill();
        let _ = p3.wait();
        let outs = [finish(p1), finish(p2)];
        for o in &outs {
            let err = stderr(o);
            assert!(o.status.success() || (o.status.code() == Some(1) && err.contains("is being copied into this")), "{err}");
        }
        // Whatever happened, the target holds no key twice (checked by reading it) and, as
        // checked below, nothing foreign. (A stage keeps the killed run's hidden temporaries
        // until the next run removes them; readers skip them, the test's reader refuses them,
        // so the stage is read after the next round.)
        let after_kill = if matches!(tgt, Tgt::Mdb(_)) { tgt.rows() } else { BTreeMap::new() };
        // Round 2: everything again, two processes at once; then the target is the model.
        let (q1, q2) = (spawn(&[a, b], &tgt), spawn(&[c], &tgt));
        let outs = [finish(q1), finish(q2)];
        for o in &outs {
            assert!(o.status.success() || stderr(o).contains("is being copied into this"), "{}", stderr(o));
        }
        let o = finish(spawn(&[a, b, c], &tgt));
        assert!(o.status.success(), "{}", stderr(&o));
        let want = model(&src, &tgt);
        for (k, r) in &after_kill {
            assert_eq!(want.get(k), Some(r), "after the kill: a row the model lacks or differs: {k:?}");
        }
        assert_rows_eq("after kills and refusals, then one more run", &tgt.rows(), &want);
        drop(src.srv);
    });
}
