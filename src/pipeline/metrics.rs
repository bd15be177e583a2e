//! The metrics endpoint (`copy --metrics-addr 127.0.0.1:PORT`, off by default): what a running
//! copy has done so far, in the OpenMetrics text format Prometheus scrapes, at `/metrics`.
//!
//! The pipeline counts into one process-wide set of metrics ([`metrics`]) once per batch (never
//! per row); an HTTP thread ([`serve`]) encodes them on each scrape. The metric names and what
//! they count are listed in the README; `grafana/perfcopy.json` is a dashboard over them.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

/// A source and a stage of the pipeline.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceStage {
    pub source: String,
    /// `read` (rows the source gave), `written` (rows its target unit took).
    pub stage: String,
}

/// A source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// A source and a child table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTable {
    pub source: String,
    pub table: String,
}

/// A queue between stages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// `readers` (readers waiting for room in a writer's queue), `writers` (writers waiting
    /// for a batch).
    pub queue: String,
}

/// Everything the endpoint serves.
pub struct Metrics {
    registry: Registry,
    pub rows: Family<SourceStage, Counter>,
    pub bytes: Family<SourceStage, Counter>,
    pub child_rows: Family<SourceTable, Counter>,
    pub duplicates: Family<SourceLabel, Counter>,
    pub conflicts: Family<SourceLabel, Counter>,
    pub units_written: Counter,
    pub retries: Counter,
    pub queue_wait_seconds: Family<QueueLabel, Counter<f64, AtomicU64>>,
    pub last_unit_written: Gauge<f64, AtomicU64>,
    pub rows_to_copy: Gauge<i64, AtomicI64>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("perfcopy");
        let m = Metrics {
            rows: Family::default(),
            bytes: Family::default(),
            child_rows: Family::default(),
            duplicates: Family::default(),
            conflicts: Family::default(),
            units_written: Counter::default(),
            retries: Counter::default(),
            queue_wait_seconds: Family::default(),
            last_unit_written: Gauge::default(),
            rows_to_copy: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("rows", "PerfSnapshotRun rows per source and stage (read: from the source; written: taken by the target)", m.rows.clone());
        registry.register("bytes", "Bytes of the rows per source and stage (in memory, as Arrow)", m.bytes.clone());
        registry.register("child_rows", "Child-table rows written per source and table", m.child_rows.clone());
        registry.register("duplicates", "Rows dropped as duplicates (of another source's row or the target's) per source", m.duplicates.clone());
        registry.register("conflicts", "Duplicates whose values differ from the surviving row, per source", m.conflicts.clone());
        registry.register("units_written", "Units (a batch of runs and their children) the target took; for MonitoringDB each is a committed transaction", m.units_written.clone());
        registry.register("retries", "Units retried after a transient error (connection reset, deadlock, lock timeout)", m.retries.clone());
        registry.register("queue_wait_seconds", "Time spent waiting on the queues between readers and writers", m.queue_wait_seconds.clone());
        registry.register("last_unit_written_timestamp_seconds", "When the target last took a unit (Unix time)", m.last_unit_written.clone());
        registry.register("rows_to_copy", "Rows the copy pass reads in all (known after the key pass)", m.rows_to_copy.clone());
        Metrics { registry, ..m }
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Adds `d` to a queue's wait time.
pub fn queue_waited(queue: &str, d: Duration) {
    metrics().queue_wait_seconds.get_or_create(&QueueLabel { queue: queue.to_string() }).inc_by(d.as_secs_f64());
}

/// Counts `n` rows (and `bytes`) of `source` at `stage`.
pub fn rows(source: &str, stage: &str, n: u64, bytes: u64) {
    let l = SourceStage { source: source.to_string(), stage: stage.to_string() };
    metrics().rows.get_or_create(&l).inc_by(n);
    metrics().bytes.get_or_create(&l).inc_by(bytes);
}

/// Serves `/metrics` on `addr` from a thread of its own, for the rest of the process. Returns
/// the address it listens on (the port chosen when `addr` has port 0).
pub fn serve(addr: &str) -> Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(|e| Error::Usage { flag: "--metrics-addr".into(), message: format!("cannot listen on {addr}: {e}") })?;
    let local = server.server_addr().to_ip().ok_or_else(|| Error::Usage { flag: "--metrics-addr".into(), message: format!("{addr} is not an IP address and port") })?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let response = if req.url() == "/metrics" || req.url().starts_with("/metrics?") {
                    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..]);
                    let r = tiny_http::Response::from_string(metrics().encode());
                    match header {
                        Ok(h) => r.with_header(h),
                        Err(()) => r,
                    }
                } else {
                    tiny_http::Response::from_string("perfcopy: metrics are at /metrics\n").with_status_code(404)
                };
                let _ = req.respond(response);
            }
        })
        .map_err(|e| Error::Internal(format!("starting the metrics thread: {e}")))?;
    Ok(local)
}
