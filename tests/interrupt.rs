//! Ctrl-C: a copy interrupted mid-run stops within a couple of seconds with exit code 130 and
//! leaves the stage as it was (no data files, no temporaries); the next run completes it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn temporaries(stage: &std::path::Path) -> usize {
    walk_files(stage).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).count()
}


#[test]
fn sigint_stops_quickly_with_130_and_leaves_nothing_half_written() {
    let t = tempfile::tempdir().unwrap();
    let (src, stage) = (t.path().join("src"), t.path().join("stage"));
    let g = perfcopy(&["generate", "--out", s(&src), "--servers", "2", "--rows", "1500000", "--overlap", "0.05", "--child-tables", "none"]);
    assert!(g.status.success(), "{}", stderr(&g));

    let bin = assert_cmd::cargo::cargo_bin("perfcopy");
    let mut child = Command::new(&bin)
        .args(["copy", "--from", s(&src), "--stage", s(&stage), "--register-servers", "--progress", "off", "--batch-rows", "4096"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the copy pass is writing (a temporary data file exists), then interrupt.
    let start = Instant::now();
    while temporaries(&stage) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the copy finished before it could be interrupted; give it more rows");
        assert!(start.elapsed() < Duration::from_secs(120), "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(signalled.elapsed() < Duration::from_secs(5), "still running 5 s after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(stage_files(&stage).is_empty(), "data files after an interrupted run");
    assert_eq!(temporaries(&stage), 0, "temporary files left behind");

    // The next run completes the copy; verify agrees.
    let r = copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    assert!(r["totals"]["rows_written"].as_u64().unwrap() > 0);
    let v = perfcopy(&["verify", "--from", s(&src), "--stage", s(&stage)]);
    assert!(v.status.success(), "{}", stderr(&v));
}
