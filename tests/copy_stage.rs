//! `perfcopy copy`, `verify` and `generate` driven as a user would, each checked against an
//! independent model of the expected stage (tests/common: a plain BTreeMap survivor rule) and
//! against the stage read back file by file.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

fn generate(out: &Path, servers: u32, rows: u32, overlap: &str, seed: u32) -> Vec<PathBuf> {
    let o = perfcopy(&["generate", "--out", s(out), "--servers", &servers.to_string(), "--rows", &rows.to_string(), "--overlap", overlap, "--seed", &seed.to_string(), "--child-tables", "none"]);
    assert!(o.status.success(), "generate failed: {}", stderr(&o));
    let files = parquet_files(out);
    assert_eq!(files.len(), servers as usize, "one file per server");
    files
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn as_map(entries: &[(String, i32)]) -> NameMap {
    entries.iter().map(|(n, id)| (fold(n), *id)).collect()
}

fn registered_in_report(report: &serde_json::Value) -> Vec<(String, i32)> {
    serde_json::from_value(report["registered_servers"].clone()).unwrap()
}

/// A failed run: not success, not a panic, and nothing but `expected_code` when given.
fn assert_failed(o: &std::process::Output, expected_code: Option<i32>) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_ne!(o.status.code(), Some(101), "perfcopy panicked: {err}");
    if let Some(c) = expected_code {
        assert_eq!(o.status.code(), Some(c), "exit code; stderr: {err}");
    }
    err
}

/// Writes `rows` as DIR/a.parquet and copies it into DIR/stage (registering its servers).
/// Returns the source path, the stage and the stage's rows.
fn staged(t: &TempDir, rows: &[SrcRow]) -> (PathBuf, PathBuf, BTreeMap<(i32, i64), Row>) {
    let (pa, stage) = (t.path().join("a.parquet"), t.path().join("stage"));
    write_source(&pa, rows, &SourceOpts::default());
    // Small row groups, so reading the stage's hot days back prunes by statistics.
    copy_json(&["--from", s(&pa), "--stage", s(&stage), "--register-servers", "--row-group-rows", "16"]);
    let stage_rows = by_key(&read_stage(&stage));
    (pa, stage, stage_rows)
}

#[test]
fn consolidates_generated_sources_with_overlap() {
    let t = tmp();
    let (src, stage) = (t.path().join("src"), t.path().join("stage"));
    let files = generate(&src, 4, 8_000, "0.3", 7);
    let sources: Vec<Vec<SrcRow>> = files.iter().map(|f| read_source(f)).collect();
    let reg = registered(&NameMap::new(), &sources);
    assert_eq!(reg.len(), 4);
    let want = expected(&sources, &as_map(&reg), Win::default(), &BTreeMap::new());
    let totals = Counts::sum(&want.per_source);
    assert!(totals.duplicates_dropped > 100 && totals.conflicts > 0, "generated data must overlap and conflict: {totals:?}");

    let report = copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    assert_report(&report, &want);
    assert_eq!(registered_in_report(&report), reg);
    assert_stage_eq(&stage, &want.stage);
    assert_eq!(read_registry(&stage.join("servers.csv")), reg.iter().cloned().collect::<BTreeMap<_, _>>());
    let o = perfcopy(&["verify", "--from", s(&src), "--stage", s(&stage)]);
    assert!(o.status.success(), "verify after copy: {}", stderr(&o));
}

#[test]
fn rerun_adds_nothing_even_without_a_watermark() {
    let t = tmp();
    let (src, stage) = (t.path().join("src"), t.path().join("stage"));
    let files = generate(&src, 3, 3_000, "0.2", 3);
    copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    let rows = read_stage(&stage);
    let files_before = stage_files(&stage);

    let again = copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    assert_eq!(report_totals(&again).rows_written, 0);
    assert_eq!(read_stage(&stage), rows);
    assert_eq!(stage_files(&stage), files_before, "a re-run creates no data files");

    // The same data under another path has no watermark: every row is read and found in the stage.
    let copy_dir = t.path().join("src-copy");
    std::fs::create_dir(&copy_dir).unwrap();
    for f in &files {
        std::fs::copy(f, copy_dir.join(f.file_name().unwrap())).unwrap();
    }
    let sources: Vec<Vec<SrcRow>> = files.iter().map(|f| read_source(f)).collect();
    let map = as_map(&read_registry(&stage.join("servers.csv")).into_iter().collect::<Vec<_>>());
    let want = expected(&sources, &map, Win::default(), &by_key(&rows));
    assert_eq!(Counts::sum(&want.per_source).rows_written, 0);
    let third = copy_json(&["--from", s(&copy_dir), "--stage", s(&stage)]);
    assert_report(&third, &want);
    assert_eq!(read_stage(&stage), rows);
}

/// Two hand-made sources: A holds SQLA; B holds `SQLB\INST` and a restored copy of part of A.
fn two_sources() -> (Vec<SrcRow>, Vec<SrcRow>) {
    let a = series("SQLA", T0, 300, 1, 1);
    let mut b = copy_rows(&a[100..160], 1, 4, None);
    b.extend(series("SQLB\\INST", T0 + 1_000, 300, 61, 2));
    (a, b)
}

#[test]
fn appended_rows_are_copied_alone_on_the_next_run() {
    let t = tmp();
    let stage = t.path().join("stage");
    let (pa, pb) = (t.path().join("a.parquet"), t.path().join("b.parquet"));
    let (a, b) = two_sources();
    write_source(&pa, &a, &SourceOpts::default());
    write_source(&pb, &b, &SourceOpts::default());
    let args = ["--from", s(&pa), "--from", s(&pb), "--stage", s(&stage), "--register-servers"];
    let first = copy_json(&args);
    let map = name_map(&[("SQLA", 1), ("SQLB\\INST", 2)]);
    let want1 = expected(&[a.clone(), b.clone()], &map, Win::default(), &BTreeMap::new());
    assert_copied(&first, &stage, &want1);

    // A grows: later snapshots of SQLA, plus (a restore appended to it) rows of SQLB\INST the
    // stage already holds, some with other values.
    let mut new_rows = series("SQLA", T0 + 300 * MIN5, 120, 301, 11);
    new_rows.extend(copy_rows(&b[70..110], 421, 3, None));
    let mut a2 = a.clone();
    a2.extend(new_rows.clone());
    write_source(&pa, &a2, &SourceOpts::default());

    let want2 = expected(&[new_rows, Vec::new()], &map, Win::default(), &want1.stage);
    assert_eq!(want2.per_source[0].rows_written, 120);
    assert_eq!(want2.per_source[0].already_in_target, 40);
    let second = copy_json(&args);
    assert_copied(&second, &stage, &want2);
}

#[test]
fn a_source_replaced_under_the_same_name_is_read_again() {
    let t = tmp();
    let stage = t.path().join("stage");
    let pa = t.path().join("a.parquet");
    let a = series("SQLA", T0, 200, 1, 1);
    write_source(&pa, &a, &SourceOpts::default());
    let args = ["--from", s(&pa), "--stage", s(&stage), "--register-servers"];
    copy_json(&args);
    let map = name_map(&[("SQLA", 1)]);
    let mut stage_rows = expected(std::slice::from_ref(&a), &map, Win::default(), &BTreeMap::new()).stage;
    assert_stage_eq(&stage, &stage_rows);

    // Same name, other content: IDs restart at 1, so row 200 (the watermark) is another row.
    let mut a2 = copy_rows(&a[100..], 1, 1, None);
    a2.extend(series("SQLA", T0 + 200 * MIN5, 150, 101, 5));
    assert_ne!(a2[199].snapshot_ms, a[199].snapshot_ms);
    write_source(&pa, &a2, &SourceOpts::default());
    let want = expected(&[a2.clone()], &map, Win::default(), &stage_rows);
    assert_eq!((want.per_source[0].rows_read, want.per_source[0].rows_written, want.per_source[0].conflicts), (250, 150, 100));
    assert_copied(&copy_json(&args), &stage, &want);
    stage_rows = want.stage;

    // Shorter than the watermark: there is no row with the watermark's ID at all.
    let a3 = series("SQLA", T0 + 400 * MIN5, 50, 1, 6);
    write_source(&pa, &a3, &SourceOpts::default());
    let want = expected(&[a3], &map, Win::default(), &stage_rows);
    assert_copied(&copy_json(&args), &stage, &want);
}

#[test]
fn unknown_servers_fail_listing_every_name_and_write_nothing() {
    let t = tmp();
    let stage = t.path().join("stage");
    let known = t.path().join("known.parquet");
    write_source(&known, &series("KNOWN01", T0, 50, 1, 1), &SourceOpts::default());
    copy_json(&["--from", s(&known), "--stage", s(&stage), "--register-servers"]);
    let before = snapshot_dir(&stage);

    let unknown = ["NEWSRV1", "Zeta\\INST", "ünknown-ß"];
    let mixed = t.path().join("mixed.parquet");
    let mut rows = series("known01", T0 + 50 * MIN5, 30, 1, 2);
    for (i, n) in unknown.iter().enumerate() {
        rows.extend(series(n, T0, 20, 100 + 20 * i as i64, 3 + i as u64));
    }
    write_source(&mixed, &rows, &SourceOpts::default());
    let other = t.path().join("other.parquet");
    write_source(&other, &series("NEWSRV1", T0 + DAY, 20, 1, 9), &SourceOpts::default());

    let o = perfcopy(&["copy", "--from", s(&mixed), "--from", s(&other), "--stage", s(&stage)]);
    let err = assert_failed(&o, Some(4));
    for n in unknown {
        assert!(err.contains(n), "stderr must name '{n}': {err}");
    }
    assert!(!err.contains("KNOWN01") && !err.contains("known01"), "a known server is not unknown: {err}");
    assert_eq!(snapshot_dir(&stage), before, "the stage must be unchanged");

    // A fresh stage: no data, no registry.
    let fresh = t.path().join("fresh");
    let o = perfcopy(&["copy", "--from", s(&mixed), "--stage", s(&fresh)]);
    assert_failed(&o, Some(4));
    assert!(stage_files(&fresh).is_empty());
    assert!(!fresh.join("servers.csv").exists());
}

#[test]
fn renamed_server_aliases_share_one_id_and_are_deduplicated() {
    let t = tmp();
    let stage = t.path().join("stage");
    // The DBATools database of a server renamed from SQLOLD to SQLNEW at row 200 ...
    let mut a = series("SQLOLD", T0, 260, 1, 4);
    for r in &mut a[200..] {
        r.server_name = "SQLNEW".into();
    }
    // ... and a restored copy taken after the rename, where every name reads "sqlnew".
    let mut b = copy_rows(&a[150..260], 1, 10, Some("sqlnew"));
    b.extend(series("OTHER", T0, 40, 111, 8));
    let (pa, pb) = (t.path().join("a.parquet"), t.path().join("b.parquet"));
    write_source(&pa, &a, &SourceOpts::default());
    write_source(&pb, &b, &SourceOpts::default());
    let map_file = t.path().join("map.csv");
    write_map(&map_file, &[("SQLOLD", 5), ("SqlNew", 5), ("OTHER", 2)]);
    // The stage's registry says otherwise for SQLOLD: --server-map comes first.
    std::fs::create_dir_all(&stage).unwrap();
    write_map(&stage.join("servers.csv"), &[("SQLOLD", 3), ("OTHER", 2)]);

    let map = name_map(&[("SQLOLD", 5), ("SQLNEW", 5), ("OTHER", 2)]);
    let want = expected(&[a, b], &map, Win::default(), &BTreeMap::new());
    assert_eq!(want.per_source[1].duplicates_dropped, 110);
    let report = copy_json(&["--from", s(&pa), "--from", s(&pb), "--stage", s(&stage), "--server-map", s(&map_file)]);
    assert_copied(&report, &stage, &want);
    assert_eq!(stage_files(&stage).iter().map(|(id, _)| *id).collect::<std::collections::BTreeSet<_>>(), [2, 5].into());
    let o = perfcopy(&["verify", "--from", s(&pa), "--from", s(&pb), "--stage", s(&stage), "--server-map", s(&map_file)]);
    assert!(o.status.success(), "verify with the same map: {}", stderr(&o));
}

#[test]
fn missing_required_column_names_file_and_column() {
    for (omit, case) in [("SqlVersion", Case::Exact), ("SnapshotUTC", Case::Lower), ("ServerName", Case::Upper), ("PerfSnapshotRunID", Case::Exact)] {
        let t = tmp();
        let stage = t.path().join("stage");
        let good = t.path().join("good.parquet");
        write_source(&good, &series("SQLA", T0, 20, 1, 1), &SourceOpts::default());
        let bad = t.path().join("lacking_column.parquet");
        write_source(&bad, &series("SQLB", T0, 20, 1, 2), &SourceOpts { omit: Some(omit), case, ..Default::default() });
        let o = perfcopy(&["copy", "--from", s(&good), "--from", s(&bad), "--stage", s(&stage), "--register-servers"]);
        let err = assert_failed(&o, None);
        assert!(err.contains("lacking_column.parquet") && err.contains(omit), "stderr must name file and column {omit}: {err}");
        assert!(stage_files(&stage).is_empty() && !stage.join("servers.csv").exists(), "nothing written when {omit} is missing");
    }
}

#[test]
fn sub_millisecond_timestamps_are_an_error_naming_the_column() {
    let t = tmp();
    let bad = t.path().join("micro.parquet");
    write_source(&bad, &series("SQLA", T0, 20, 1, 1), &SourceOpts { micros: true, micros_extra: 456, ..Default::default() });
    let stage = t.path().join("stage");
    let o = perfcopy(&["copy", "--from", s(&bad), "--stage", s(&stage), "--register-servers"]);
    let err = assert_failed(&o, None);
    assert!(err.contains("micro.parquet") && err.contains("SnapshotUTC"), "{err}");
    assert!(stage_files(&stage).is_empty());
}

#[test]
fn garbage_files_are_an_error_naming_the_file() {
    let cases: [(&str, Vec<u8>); 3] = [
        ("notes.parquet", b"ServerName,ServerID\nSQL01,1\n".to_vec()),
        ("empty.parquet", Vec::new()),
        ("truncated.parquet", [b"PAR1".as_slice(), &[7u8; 100], b"PAR1"].concat()),
    ];
    for (name, bytes) in cases {
        let t = tmp();
        let dir = t.path().join("sources");
        write_source(&dir.join("a_good.parquet"), &series("SQLA", T0, 20, 1, 1), &SourceOpts::default());
        std::fs::write(dir.join(name), &bytes).unwrap();
        let stage = t.path().join("stage");
        // As a file of a directory source, and given on its own.
        for from in [dir.clone(), dir.join(name)] {
            let o = perfcopy(&["copy", "--from", s(&from), "--stage", s(&stage), "--register-servers"]);
            let err = assert_failed(&o, None);
            assert!(err.contains(name), "stderr must name {name}: {err}");
            assert!(stage_files(&stage).is_empty(), "nothing written with {name}");
        }
    }
}

#[test]
fn readers_1_and_4_give_the_same_stage_and_source_order_decides() {
    let t = tmp();
    let gen = t.path().join("gen");
    let files = generate(&gen, 5, 6_000, "0.4", 11);
    let generated: Vec<Vec<SrcRow>> = files.iter().map(|f| read_source(f)).collect();
    // Another source repeating every 5th row of two generated files, a third of them with
    // other values, in reverse time order, with run IDs that fall as time rises.
    let mut extra: Vec<SrcRow> = Vec::new();
    for f in [&generated[1], &generated[3]] {
        extra.extend(f.iter().step_by(5).cloned());
    }
    let mut extra = copy_rows(&extra, 1, 3, None);
    extra.reverse();
    let extra_dir = t.path().join("extra");
    write_source(&extra_dir.join("zz.parquet"), &extra, &SourceOpts::default());

    let mut fwd = vec![extra.clone()];
    fwd.extend(generated.iter().cloned());
    let reg = registered(&NameMap::new(), &fwd);
    let map = as_map(&reg);
    let want_fwd = expected(&fwd, &map, Win::default(), &BTreeMap::new());
    let mut rev = generated.clone();
    rev.push(extra.clone());
    let want_rev = expected(&rev, &map, Win::default(), &BTreeMap::new());
    assert_ne!(want_fwd.stage, want_rev.stage, "the test data must make source order matter");

    let run = |name: &str, from: [&Path; 2], extra_args: &[&str]| -> (serde_json::Value, Vec<Row>) {
        let stage = t.path().join(name);
        let mut args = vec!["--from", s(from[0]), "--from", s(from[1]), "--stage", s(&stage), "--register-servers"];
        args.extend_from_slice(extra_args);
        let report = copy_json(&args);
        (report, read_stage(&stage))
    };
    let (r1, s1) = run("s1", [&extra_dir, &gen], &["--readers", "1", "--writers", "1"]);
    let (r4, s4) = run("s4", [&extra_dir, &gen], &["--readers", "4", "--writers", "3", "--batch-rows", "128"]);
    let (r4b, s4b) = run("s4b", [&extra_dir, &gen], &["--readers", "4", "--batch-rows", "57"]);
    assert_eq!(s1, s4);
    assert_eq!(s1, s4b);
    assert_eq!(by_key(&s1), want_fwd.stage);
    for r in [&r1, &r4, &r4b] {
        assert_report(r, &want_fwd);
        assert_eq!(registered_in_report(r), reg);
    }
    let (rr, sr) = run("srev", [&gen, &extra_dir], &["--readers", "4"]);
    assert_eq!(by_key(&sr), want_rev.stage);
    assert_report(&rr, &want_rev);
}

#[test]
fn verify_passes_on_a_good_stage_and_fails_after_a_file_is_deleted() {
    let t = tmp();
    let (src, stage) = (t.path().join("src"), t.path().join("stage"));
    generate(&src, 3, 3_000, "0.2", 5);
    copy_json(&["--from", s(&src), "--stage", s(&stage), "--register-servers"]);
    let good = ok_json(&perfcopy(&["verify", "--from", s(&src), "--stage", s(&stage), "--json"]));
    assert_eq!(good["ok"], true);

    let files = stage_files(&stage);
    let (victim_id, victim) = files[files.len() / 2].clone();
    let lost: Vec<Row> = read_stage(&stage).into_iter().filter(|r| r.server_id == victim_id).collect();
    // A partition may hold one file per writer: delete them all.
    for (_, p) in files.iter().filter(|(id, _)| *id == victim_id) {
        std::fs::remove_file(p).unwrap();
    }
    assert!(!victim.exists());

    let o = perfcopy(&["verify", "--from", s(&src), "--stage", s(&stage), "--json"]);
    assert_eq!(o.status.code(), Some(3), "verify on a damaged stage: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], false);
    for srv in report["servers"].as_array().unwrap() {
        let id = srv["server_id"].as_i64().unwrap() as i32;
        let want_missing = if id == victim_id { lost.len() as u64 } else { 0 };
        assert_eq!(srv["missing"].as_u64().unwrap(), want_missing, "server {id}: {srv}");
        assert_eq!(srv["ok"], id != victim_id);
    }
    let err = stderr(&o);
    assert!(err.contains("FAILED") && err.contains(&iso(lost[0].snapshot_ms)), "stderr names what is missing: {err}");
}

#[test]
fn window_since_inclusive_until_exclusive() {
    let t = tmp();
    let stage = t.path().join("stage");
    let p = t.path().join("a.parquet");
    // Snapshots exactly on the 5-minute marks, over two days, so boundaries are hit exactly.
    let mut rows = series("SQLA", T0, 600, 1, 1);
    for (i, r) in rows.iter_mut().enumerate() {
        r.snapshot_ms = T0 + i as i64 * MIN5;
    }
    write_source(&p, &rows, &SourceOpts::default());
    let since = T0 + 10 * MIN5;
    let until = T0 + DAY; // given as a plain date
    let win = Win { since: Some(since), until: Some(until) };
    let want = expected(&[rows.clone()], &name_map(&[("SQLA", 1)]), win, &BTreeMap::new());
    assert_eq!(want.per_source[0].rows_written, 288 - 10);

    let since_arg = iso(since);
    let report = copy_json(&["--from", s(&p), "--stage", s(&stage), "--register-servers", "--since", &since_arg, "--until", "2024-03-02"]);
    assert_copied(&report, &stage, &want);
    let ok = perfcopy(&["verify", "--from", s(&p), "--stage", s(&stage), "--since", &since_arg, "--until", "2024-03-02"]);
    assert!(ok.status.success(), "verify in the same window: {}", stderr(&ok));
    let outside = perfcopy(&["verify", "--from", s(&p), "--stage", s(&stage)]);
    assert_eq!(outside.status.code(), Some(3), "rows outside the window are not staged");

    for (a, b) in [("2024-03-02", "2024-03-02"), ("2024-03-02T00:00:01Z", "2024-03-02")] {
        let o = perfcopy(&["copy", "--from", s(&p), "--stage", s(&stage), "--since", a, "--until", b]);
        let err = assert_failed(&o, Some(2));
        assert!(err.contains("--since"), "{err}");
    }
}

#[test]
fn dry_run_writes_nothing_and_reports_what_a_real_run_does() {
    let t = tmp();
    let a = series("SQLA", T0, 200, 1, 1);
    let (pa, stage, stage1) = staged(&t, &a);
    let pn = t.path().join("new.parquet");

    // A grows (new rows, and an old key again with other values); a new server appears whose
    // file repeats some of A's rows under A's name.
    let mut grown = a.clone();
    let mut added = series("SQLA", T0 + 200 * MIN5, 80, 201, 2);
    added.extend(copy_rows(&a[10..20], 281, 1, None));
    grown.extend(added.clone());
    write_source(&pa, &grown, &SourceOpts::default());
    let mut n = series("NEWONE", T0, 100, 1, 3);
    n.extend(copy_rows(&added[..40], 101, 2, None));
    write_source(&pn, &n, &SourceOpts::default());

    let map = name_map(&[("SQLA", 1), ("NEWONE", 2)]);
    let want = expected(&[added, n], &map, Win::default(), &stage1);
    let before = snapshot_dir(&stage);
    let args = ["--from", s(&pa), "--from", s(&pn), "--stage", s(&stage), "--register-servers"];
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = copy_json(&dry_args);
    assert_eq!(snapshot_dir(&stage), before, "--dry-run changed the stage");
    assert_eq!(dry["dry_run"], true);
    assert_report(&dry, &want);
    assert_eq!(registered_in_report(&dry), vec![("NEWONE".to_string(), 2)], "what --register-servers would assign");

    let real = copy_json(&args);
    assert_copied(&real, &stage, &want);

    let nowhere = t.path().join("not-created");
    copy_json(&["--from", s(&pn), "--stage", s(&nowhere), "--register-servers", "--dry-run"]);
    assert!(!nowhere.exists(), "--dry-run created the stage directory");
}

#[test]
fn microseconds_odd_column_case_extra_columns_no_server_id_and_other_string_types() {
    let t = tmp();
    let stage = t.path().join("stage");
    let a = series("SQLA", T0, 150, 1, 1);
    let mut b = copy_rows(&a[50..120], 1, 5, Some("sqla"));
    b.extend(series("SQLB", T0, 100, 71, 2));
    let mut c = copy_rows(&b[60..], 1, 4, None);
    c.extend(copy_rows(&a[..30], 200, 0, None));
    let paths: Vec<PathBuf> = ["a.parquet", "b.parquet", "c.parquet"].iter().map(|n| t.path().join(n)).collect();
    write_source(&paths[0], &a, &SourceOpts { micros: true, case: Case::Lower, extra_columns: true, server_id_column: false, ..Default::default() });
    write_source(&paths[1], &b, &SourceOpts { case: Case::Upper, reverse: true, extra_columns: true, dictionary_names: true, ..Default::default() });
    write_source(&paths[2], &c, &SourceOpts { micros: true, server_id_column: false, reverse: true, large_strings: true, utc_zone: true, ..Default::default() });
    let sources: Vec<Vec<SrcRow>> = paths.iter().map(|p| read_source(p)).collect();
    assert_eq!(sources[0].len(), 150);
    // Known servers (registration of case variants is tested on its own).
    std::fs::create_dir_all(&stage).unwrap();
    write_map(&stage.join("servers.csv"), &[("SQLA", 1), ("SQLB", 2)]);
    let want = expected(&sources, &name_map(&[("SQLA", 1), ("SQLB", 2)]), Win::default(), &BTreeMap::new());
    assert!(want.per_source[1].conflicts > 0 && want.per_source[2].duplicates_dropped > 0);
    let report = copy_json(&["--from", s(&paths[0]), "--from", s(&paths[1]), "--from", s(&paths[2]), "--stage", s(&stage)]);
    assert_copied(&report, &stage, &want);
}

#[test]
fn duplicates_within_one_source_out_of_time_order() {
    let t = tmp();
    let stage = t.path().join("stage");
    let base = series("SQLA", T0, 400, 1_000, 1);
    let mut rows = base.clone();
    // Later in the file with a higher run ID (loses), some with other values.
    rows.extend(copy_rows(&base.iter().step_by(7).cloned().collect::<Vec<_>>(), 5_000, 2, None));
    // Later in the file with a lower run ID (wins), some with other values.
    rows.extend(copy_rows(&base.iter().skip(3).step_by(11).cloned().collect::<Vec<_>>(), 1, 3, None));
    // Exact ties on (key, run ID) with other values: the first in file order wins.
    for i in [5usize, 200, 399] {
        let mut r = base[i].clone();
        r.v.top_wait_type = Some("TIE_LOSER".into());
        rows.push(r);
    }
    // Not in time order: rotate and interleave.
    rows.rotate_left(123);
    let (even, odd): (Vec<_>, Vec<_>) = rows.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let rows: Vec<SrcRow> = odd.into_iter().rev().chain(even).map(|(_, r)| r).collect();
    let p = t.path().join("a.parquet");
    write_source(&p, &rows, &SourceOpts::default());
    let want = expected(&[rows], &name_map(&[("SQLA", 1)]), Win::default(), &BTreeMap::new());
    assert_eq!(want.stage.len(), 400);
    assert!(want.per_source[0].conflicts > 0);
    let report = copy_json(&["--from", s(&p), "--stage", s(&stage), "--register-servers", "--batch-rows", "16"]);
    assert_copied(&report, &stage, &want);
}

#[test]
fn rows_already_in_the_stage_win_over_sources() {
    let t = tmp();
    // Five days in the stage, of which the new export touches one and a half.
    let a = series("SQLA", T0, 1_500, 1, 1);
    let (_, stage, stage1) = staged(&t, &a);
    let pb = t.path().join("b.parquet");

    // Another export holding the same snapshots, half with other values, and some new ones.
    let mut b = copy_rows(&a[600..720], 1, 2, None);
    b.extend(series("SQLA", T0 + 1_500 * MIN5, 60, 121, 4));
    write_source(&pb, &b, &SourceOpts::default());
    let want = expected(&[b], &name_map(&[("SQLA", 1)]), Win::default(), &stage1);
    assert_eq!((want.per_source[0].already_in_target, want.per_source[0].conflicts, want.per_source[0].rows_written), (120, 60, 60));
    let report = copy_json(&["--from", s(&pb), "--stage", s(&stage)]);
    assert_copied(&report, &stage, &want);
}

#[test]
fn registered_ids_follow_the_highest_known_in_name_order() {
    let t = tmp();
    let stage = t.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    write_map(&stage.join("servers.csv"), &[("Alpha", 3)]);
    let map_file = t.path().join("map.csv");
    write_map(&map_file, &[("Beta", 10)]);
    let names = ["beta", "ALPHA", "zed", "Émile", "Bravo", "HOST\\INST"];
    let sources: Vec<Vec<SrcRow>> = names.iter().enumerate().map(|(i, n)| series(n, T0 + i as i64 * 1000, 30, 1, i as u64)).collect();
    let paths: Vec<PathBuf> = (0..names.len()).map(|i| t.path().join(format!("s{i}.parquet"))).collect();
    let mut args = vec!["copy".to_string(), "--json".into(), "--stage".into(), s(&stage).into(), "--server-map".into(), s(&map_file).into(), "--register-servers".into()];
    for (p, rows) in paths.iter().zip(&sources) {
        write_source(p, rows, &SourceOpts::default());
        args.extend(["--from".to_string(), s(p).to_string()]);
    }
    let known = name_map(&[("Alpha", 3), ("Beta", 10)]);
    let reg = registered(&known, &sources);
    assert_eq!(reg, vec![("Bravo".into(), 11), ("HOST\\INST".into(), 12), ("zed".into(), 13), ("Émile".into(), 14)]);
    let mut map = known.clone();
    map.extend(as_map(&reg));
    let want = expected(&sources, &map, Win::default(), &BTreeMap::new());

    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let report = ok_json(&perfcopy(&args));
    assert_eq!(registered_in_report(&report), reg);
    assert_copied(&report, &stage, &want);
    let registry = read_registry(&stage.join("servers.csv"));
    for (n, id) in reg.iter().cloned().chain([("Alpha".to_string(), 3)]) {
        assert_eq!(registry.get(&n), Some(&id), "servers.csv must record {n} = {id}: {registry:?}");
    }
    for (n, id) in &registry {
        assert_eq!(map.get(&fold(n)), Some(id), "servers.csv entry {n} = {id} is not what the run used");
    }
    // Registering again changes nothing.
    let again = ok_json(&perfcopy(&args));
    assert!(registered_in_report(&again).is_empty());
    assert_eq!(read_registry(&stage.join("servers.csv")), registry);
}

#[test]
fn generate_is_deterministic_with_exact_types_and_real_overlap() {
    let t = tmp();
    let (d1, d2, d3) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    generate(&d1, 3, 1_500, "0.1", 5);
    generate(&d2, 3, 1_500, "0.1", 5);
    generate(&d3, 3, 1_500, "0.1", 6);
    let (s1, s2, s3) = (snapshot_dir(&d1), snapshot_dir(&d2), snapshot_dir(&d3));
    assert_eq!(s1, s2, "same seed, same bytes");
    assert_eq!(s1.keys().collect::<Vec<_>>(), s3.keys().collect::<Vec<_>>());
    assert_ne!(s1, s3, "another seed, other bytes");

    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (i, f) in parquet_files(&d1).iter().enumerate() {
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
        let types: Vec<String> = b.schema().fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
        let mut want: Vec<String> = vec!["PerfSnapshotRunID Int64".into()];
        for (n, ty) in stage_fields() {
            want.push(format!("{n} {ty}"));
        }
        assert_eq!(types, want, "{}", f.display());
        for r in read_source(f) {
            if let Some(prev) = seen.insert((fold(&r.server_name), r.snapshot_ms), i) {
                assert_ne!(prev, i, "a key repeats within generated file {}", f.display());
            }
        }
    }
    let total: usize = parquet_files(&d1).iter().map(|f| read_source(f).len()).sum();
    assert!(seen.len() < total, "--overlap 0.1 must repeat keys across files");
}

/// Regression guard: which spelling of a new server name gets registered (and so its place in
/// name order, and its ID) must not depend on which reader meets it first.
#[test]
fn registering_case_variants_of_a_name_does_not_depend_on_readers() {
    let t = tmp();
    // The first source meets "zeta" only after thousands of "beta" rows; the second starts
    // with "ZETA". "ZETA" < "beta" < "zeta" in String order, so the spelling decides the IDs.
    let mut a = series("beta", T0, 6_000, 1, 1);
    a.extend(series("zeta", T0, 10, 6_001, 2));
    let b = series("ZETA", T0 + DAY * 30, 10, 1, 3);
    let (pa, pb) = (t.path().join("a.parquet"), t.path().join("b.parquet"));
    write_source(&pa, &a, &SourceOpts { row_group_rows: 1_000, ..Default::default() });
    write_source(&pb, &b, &SourceOpts::default());
    let reg = registered(&NameMap::new(), &[a.clone(), b.clone()]);
    assert_eq!(reg, vec![("beta".to_string(), 1), ("zeta".to_string(), 2)]);
    let want = expected(&[a, b], &as_map(&reg), Win::default(), &BTreeMap::new());
    for (i, readers) in ["1", "4", "4", "2"].iter().enumerate() {
        let stage = t.path().join(format!("stage{i}"));
        let report = copy_json(&["--from", s(&pa), "--from", s(&pb), "--stage", s(&stage), "--register-servers", "--readers", readers, "--batch-rows", "64"]);
        assert_eq!(registered_in_report(&report), reg, "--readers {readers}");
        assert_eq!(read_registry(&stage.join("servers.csv")), reg.iter().cloned().collect::<BTreeMap<_, _>>(), "--readers {readers}");
        assert_stage_eq(&stage, &want.stage);
    }
}

#[test]
fn an_error_in_the_middle_of_a_copy_leaves_no_data_files() {
    let t = tmp();
    let stage = t.path().join("stage");
    let (pa, pb) = (t.path().join("a.parquet"), t.path().join("b_bad.parquet"));
    write_source(&pa, &series("SQLA", T0, 2_000, 1, 1), &SourceOpts::default());
    // Only the full-row pass sees the bad value: a TopWaitType longer than NVARCHAR(120), in
    // the last row, after many batches of both sources went to the writers.
    let mut b = series("SQLB", T0, 2_000, 1, 2);
    b.last_mut().unwrap().v.top_wait_type = Some("W".repeat(121));
    write_source(&pb, &b, &SourceOpts::default());
    let o = perfcopy(&["copy", "--from", s(&pa), "--from", s(&pb), "--stage", s(&stage), "--register-servers", "--batch-rows", "32", "--readers", "2"]);
    let err = assert_failed(&o, None);
    assert!(err.contains("b_bad.parquet") && err.contains("TopWaitType"), "{err}");
    assert!(stage_files(&stage).is_empty(), "no data file may be left: {:?}", snapshot_dir(&stage).keys().collect::<Vec<_>>());
}

// A second run of a source while one holds it: tests/concurrent.rs.

#[test]
fn verify_fails_on_a_stage_holding_a_key_twice() {
    let t = tmp();
    let a = series("SQLA", T0, 120, 1, 1);
    let (pa, stage, _) = staged(&t, &a);
    let (_, file) = stage_files(&stage).remove(0);
    std::fs::copy(&file, file.with_file_name("part-copied-by-hand.parquet")).unwrap();
    let o = perfcopy(&["verify", "--from", s(&pa), "--stage", s(&stage), "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["servers"][0]["target_duplicates"].as_u64(), Some(120));
    assert_eq!(report["servers"][0]["missing"].as_u64(), Some(0));
}

/// A bad value's row number must point into the file, not into whichever batch it was read in.
#[test]
fn bad_value_errors_name_the_row_of_the_file() {
    let t = tmp();
    let p = t.path().join("a.parquet");
    let bad_row = 1_234usize;
    let mut rows = series("SQLA", T0, 2_000, 1, 1);
    rows[bad_row].v.top_wait_type = Some("W".repeat(121));
    write_source(&p, &rows, &SourceOpts { row_group_rows: 500, ..Default::default() });
    let o = perfcopy(&["copy", "--from", s(&p), "--stage", s(&t.path().join("stage")), "--register-servers", "--batch-rows", "32"]);
    let err = assert_failed(&o, None);
    assert!(err.contains("TopWaitType"), "{err}");
    // 0-based or 1-based, but in the file: not row 18 of the 39th batch.
    let file_row = [
        format!("row {bad_row}:"),
        format!("row {}:", bad_row + 1),
        format!("row {bad_row} of the file"),
        format!("row {} of the file", bad_row + 1),
    ];
    assert!(file_row.iter().any(|r| err.contains(r.as_str())), "stderr must name row {bad_row} of the file: {err}");
}

#[test]
fn empty_sources_and_non_parquet_files_in_a_directory_are_harmless() {
    let t = tmp();
    let (dir, stage) = (t.path().join("sources"), t.path().join("stage"));
    let b = series("SQLB", T0, 80, 1, 2);
    write_source(&dir.join("a_empty.parquet"), &[], &SourceOpts::default());
    write_source(&dir.join("b.parquet"), &b, &SourceOpts::default());
    std::fs::write(dir.join("README.txt"), "not a source").unwrap();
    let want = expected(&[Vec::new(), b], &name_map(&[("SQLB", 1)]), Win::default(), &BTreeMap::new());
    let report = copy_json(&["--from", s(&dir), "--stage", s(&stage), "--register-servers"]);
    assert_copied(&report, &stage, &want);
}

/// A stage's key and row reads take inclusive ranges, like every target (issue 13: they took
/// inclusive and half-open ones, so a row group holding only a range's last key could be
/// pruned away).
#[test]
fn stage_ranges_include_both_ends() {
    let t = tmp();
    let (pa, stage) = (t.path().join("a.parquet"), t.path().join("stage"));
    let rows = series("SQL01", T0, 4, 1, 5);
    write_source(&pa, &rows, &SourceOpts::default());
    // One row per row group: the statistics then prune exactly to the range.
    copy_json(&["--from", s(&pa), "--stage", s(&stage), "--register-servers", "--row-group-rows", "1"]);
    let target = perfcopy::sink::stage::Stage::new(&stage, Default::default(), false);
    let id = read_registry(&stage.join("servers.csv"))["SQL01"];
    let ts: Vec<i64> = rows.iter().map(|r| r.snapshot_ms).collect();
    assert_ranges_include_both_ends(&target, id, &ts);
}
