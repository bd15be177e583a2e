//! The metrics endpoint (issue 15): `copy --metrics-addr` serves OpenMetrics text that a client
//! we did not write (Python's urllib) scrapes during a copy; the counters grow while the copy
//! runs, end at the report's figures, and every metric the Grafana dashboard
//! (`grafana/perfcopy.json`) queries is served.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mssql::*;
use common::*;
use serde_json::Value;

/// The value of the sample `name{labels}` in `body` (labels as the text has them).
fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn a_copy_serves_its_metrics_while_it_runs() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let rows = series("SQL01", T0, 400, 1, 1);
    seed(&srv, dir.path(), "DBATools", &rows, true);
    // One wait-stats row per run, so child rows are counted too.
    srv.create_table(
        "DBATools",
        "dbo.PerfSnapshotWaitStats",
        vec![
            tds_test_server::Column::new("PerfSnapshotWaitStatsID", tds_test_server::SqlType::BigInt, false).identity(),
            tds_test_server::Column::new("PerfSnapshotRunID", tds_test_server::SqlType::BigInt, false),
            tds_test_server::Column::new("WaitType", tds_test_server::SqlType::NVarChar(Some(120)), false),
        ],
        &[&["PerfSnapshotWaitStatsID"]],
    )
    .unwrap();
    let kids = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("PerfSnapshotRunID", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("WaitType", arrow::datatypes::DataType::Utf8, false),
        ])),
        vec![std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(1..=400)), std::sync::Arc::new(arrow::array::StringArray::from_iter_values((1..=400).map(|i| format!("WAIT_{}", i % 7))))],
    )
    .unwrap();
    srv.insert_batch("DBATools", "dbo.PerfSnapshotWaitStats", &kids).unwrap();
    // A slow source: the copy takes seconds, long enough to be scraped while it runs.
    srv.faults().delay_responses(Some(Duration::from_millis(30)));
    let stage = dir.path().join("stage");
    let from = conn(&srv, "DBATools");
    let mut copy = Command::new(assert_cmd::cargo::cargo_bin("perfcopy"))
        .args(["copy", "--from", &from, "--stage", s(&stage), "--register-servers", "--batch-rows", "10", "--metrics-addr", "127.0.0.1:0", "--progress", "off", "--json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(copy.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "perfcopy ended without printing its metrics address");
        if let Some(u) = line.trim().strip_prefix("metrics: ") {
            break u.to_string();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"), "{url}");
    let scraper = Command::new("python3").args([&format!("{}/tests/python/scrape_metrics.py", env!("CARGO_MANIFEST_DIR")), &url]).stdout(Stdio::piped()).spawn().unwrap();
    let out = copy.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scrapes = scraper.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&scrapes.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["not_found_status"], 404, "{:?}", lines[0]);
    let bodies: Vec<&str> = lines[1..].iter().map(|l| {
        assert_eq!(l["status"], 200);
        assert!(l["content_type"].as_str().unwrap().starts_with("application/openmetrics-text"), "{l}");
        l["body"].as_str().unwrap()
    }).collect();
    assert!(bodies.len() >= 3, "only {} scrapes during the copy", bodies.len());

    let label = format!("source=\"{}\",stage=\"read\"", report["sources"][0]["source"].as_str().unwrap());
    let read: Vec<f64> = bodies.iter().map(|b| sample(b, "perfcopy_rows_total", &label).unwrap_or(0.0)).collect();
    assert!(read.windows(2).all(|w| w[0] <= w[1]), "a counter went back: {read:?}");
    assert!(read.iter().any(|&r| r > 0.0 && r < 400.0), "no scrape saw the copy half way: {read:?}");
    assert!(read.iter().all(|&r| r <= 400.0));
    let last = bodies.last().unwrap();
    assert_eq!(sample(last, "perfcopy_rows_to_copy", "").or_else(|| last.lines().find_map(|l| l.strip_prefix("perfcopy_rows_to_copy ").and_then(|v| v.trim().parse().ok()))), Some(400.0));
    for b in &bodies {
        assert!(!b.contains(PW), "the password is in the metrics");
    }
    let kids_label = format!("source=\"{}\",table=\"PerfSnapshotWaitStats\"", report["sources"][0]["source"].as_str().unwrap());
    let kids_written = sample(last, "perfcopy_child_rows_total", &kids_label).unwrap_or(0.0);
    assert!(kids_written > 0.0 && kids_written <= 400.0, "{kids_written}");
    // Every metric the dashboard queries is served.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(format!("{}/grafana/perfcopy.json", env!("CARGO_MANIFEST_DIR"))).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let served: Vec<String> = last.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_string()).collect();
    for e in &exprs {
        for name in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("perfcopy_")) {
            let family = name.trim_end_matches("_total");
            assert!(served.iter().any(|s| s == family), "dashboard query '{e}' uses {name}, which the endpoint does not serve ({served:?})");
        }
    }
}
