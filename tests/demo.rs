//! The README's first command, `perfcopy demo`, on a small data set: it must generate,
//! consolidate, re-run without adding rows, and verify.

use assert_cmd::Command;

#[test]
fn demo_generates_copies_reruns_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("perfcopy")
        .unwrap()
        .args(["demo", "--rows", "30000", "--servers", "3", "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(stderr.contains("verify: OK"), "{stderr}");
    assert!(stderr.contains("the re-run wrote 0"), "{stderr}");
    // The stage it points the user at exists and holds one partition per server.
    let parts: Vec<_> = std::fs::read_dir(dir.path().join("stage/PerfSnapshotRun")).unwrap().collect();
    assert_eq!(parts.len(), 3);
    assert!(stderr.contains("duckdb -c"), "{stderr}");
}
