//! The report of `perfcopy bench`: per stage and end to end, with the machine it ran on.

use serde::Serialize;

use std::collections::BTreeMap;

use crate::pipeline::copy::CopyReport;
use crate::source::synthetic::{SyntheticSpec, TableMeter};

/// One stage's figures. Seconds are summed over the threads of the stage, so rows/s is the
/// throughput of one thread of that stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageFigure {
    /// The stage's name.
    pub stage: &'static str,
    /// Seconds spent in the stage, summed over its threads.
    pub thread_seconds: f64,
    /// Rows read per thread-second.
    pub rows_per_second: f64,
    /// Arrow MB read per thread-second.
    pub mb_per_second: f64,
}

/// The whole benchmark report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Cores and memory of the machine it ran on.
    pub machine: String,
    /// Rows generated and read.
    pub rows: u64,
    /// Servers generated.
    pub servers: usize,
    /// Fraction of rows duplicated into a second source.
    pub overlap: f64,
    /// Where the rows went (`null`, or the target's label).
    pub target: String,
    /// Rows written to the target.
    pub rows_written: u64,
    /// Rows dropped as duplicates.
    pub duplicates_dropped: u64,
    /// Batches read.
    pub batches: u64,
    /// Arrow bytes of the batches read.
    pub bytes: u64,
    /// TDS ROW bytes encoded (the `null` target).
    pub encoded_bytes: u64,
    /// Per stage figures.
    pub stages: Vec<StageFigure>,
    /// Seconds readers waited for room in the writers' queues.
    pub readers_waiting_on_queue_seconds: f64,
    /// Seconds writers waited for a batch.
    pub writers_waiting_on_queue_seconds: f64,
    /// Which side waited less: the slower one.
    pub bottleneck: &'static str,
    /// Wall-clock seconds of the whole copy.
    pub end_to_end_seconds: f64,
    /// Rows read per wall-clock second.
    pub end_to_end_rows_per_second: f64,
    /// Arrow MB read per wall-clock second.
    pub end_to_end_mb_per_second: f64,
    /// Peak resident memory, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Per child table moved with the runs (`--child-tables`); empty for the run-table bench.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub child_tables: Vec<ChildFigure>,
}

/// One child table's figures. Generation and encoding are measured in thread CPU seconds
/// (summed over threads), so their rates are per second of one core.
#[derive(Debug, Clone, Serialize)]
pub struct ChildFigure {
    pub table: String,
    /// Child rows generated (read) and written with their runs.
    pub rows_read: u64,
    pub rows_written: u64,
    /// Arrow MB of the rows generated.
    pub mb: f64,
    /// Generating the rows (the copy pass's readers do it while they transform).
    pub generate_cpu_seconds: f64,
    pub generate_rows_per_cpu_second: f64,
    pub generate_mb_per_cpu_second: f64,
    /// Encoding them as TDS bulk-load rows (the `null` target only), and the TDS MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_rows_per_cpu_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_arrow_mb_per_cpu_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tds_mb: Option<f64>,
    /// Rows written per wall-clock second of the whole copy (every table shares that time).
    pub rows_per_wall_second: f64,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? GiB".into());
    format!("{cores} cores, {mem}")
}

impl BenchReport {
    /// Builds the report from a finished copy of `spec`'s rows into `target` (its label).
    pub fn new(spec: &SyntheticSpec, target: String, r: &CopyReport, encoded_bytes: u64) -> BenchReport {
        let st = &r.stages;
        let rows = r.totals.rows_read;
        let mb = st.bytes_read as f64 / 1e6;
        let fig = |stage, secs: f64| StageFigure {
            stage,
            thread_seconds: secs,
            rows_per_second: if secs > 0.0 { rows as f64 / secs } else { 0.0 },
            mb_per_second: if secs > 0.0 { mb / secs } else { 0.0 },
        };
        let copy_secs = st.read_seconds + st.transform_seconds;
        BenchReport {
            machine: machine(),
            rows,
            servers: spec.servers,
            overlap: spec.overlap,
            target,
            rows_written: r.totals.rows_written,
            duplicates_dropped: r.totals.duplicates_dropped,
            batches: st.batches,
            bytes: st.bytes_read,
            encoded_bytes,
            stages: vec![
                fig("read (generate)", st.read_seconds),
                fig("remap + dedupe", st.transform_seconds),
                fig("write", st.write_seconds),
                fig("copy pass, readers", copy_secs),
            ],
            readers_waiting_on_queue_seconds: st.readers_waiting_on_queue_seconds,
            writers_waiting_on_queue_seconds: st.writers_waiting_on_queue_seconds,
            bottleneck: if st.readers_waiting_on_queue_seconds > st.writers_waiting_on_queue_seconds { "writers" } else { "readers" },
            end_to_end_seconds: r.elapsed_seconds,
            end_to_end_rows_per_second: rows as f64 / r.elapsed_seconds.max(1e-9),
            end_to_end_mb_per_second: mb / r.elapsed_seconds.max(1e-9),
            peak_rss_bytes: st.peak_rss_bytes,
            child_tables: Vec::new(),
        }
    }

    /// Adds the per-table figures of the child tables the copy moved: `generated` by the
    /// synthetic sources, `encoded` by the null target (empty for other targets).
    pub fn with_children(mut self, r: &CopyReport, generated: &BTreeMap<String, TableMeter>, encoded: &BTreeMap<String, TableMeter>) -> BenchReport {
        let rate = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
        for table in &r.child_tables {
            let (read, written) = r.sources.iter().flat_map(|s| s.children.iter()).filter(|c| &c.table == table).fold((0, 0), |(a, b), c| (a + c.rows_read, b + c.rows_written));
            let g = generated.get(table).copied().unwrap_or_default();
            let e = encoded.get(table);
            let mb = g.bytes as f64 / 1e6;
            self.child_tables.push(ChildFigure {
                table: table.clone(),
                rows_read: read,
                rows_written: written,
                mb,
                generate_cpu_seconds: g.cpu_seconds,
                generate_rows_per_cpu_second: rate(g.rows as f64, g.cpu_seconds),
                generate_mb_per_cpu_second: rate(mb, g.cpu_seconds),
                encode_cpu_seconds: e.map(|e| e.cpu_seconds),
                encode_rows_per_cpu_second: e.map(|e| rate(e.rows as f64, e.cpu_seconds)),
                // The Arrow MB of the rows encoded (written rows: duplicates' children are dropped).
                encode_arrow_mb_per_cpu_second: e.map(|e| rate(mb * e.rows as f64 / (g.rows.max(1)) as f64, e.cpu_seconds)),
                tds_mb: e.map(|e| e.bytes as f64 / 1e6),
                rows_per_wall_second: rate(written as f64, self.end_to_end_seconds),
            });
        }
        self
    }

    /// The human table, on stderr.
    pub fn print_human(&self) {
        eprintln!(
            "\nperfcopy bench: {} rows, {} servers, {:.0}% overlap -> {}   [{}]",
            self.rows,
            self.servers,
            self.overlap * 100.0,
            self.target,
            self.machine
        );
        eprintln!("{:<22} {:>14} {:>14} {:>10}", "stage", "thread-seconds", "rows/s", "MB/s");
        for s in &self.stages {
            eprintln!("{:<22} {:>14.2} {:>14.0} {:>10.1}", s.stage, s.thread_seconds, s.rows_per_second, s.mb_per_second);
        }
        eprintln!(
            "{:<22} {:>14.2} {:>14.0} {:>10.1}",
            "end to end (wall)", self.end_to_end_seconds, self.end_to_end_rows_per_second, self.end_to_end_mb_per_second
        );
        eprintln!(
            "queues: readers waited {:.2} s for writers, writers waited {:.2} s for readers -> bottleneck: {}",
            self.readers_waiting_on_queue_seconds, self.writers_waiting_on_queue_seconds, self.bottleneck
        );
        eprintln!(
            "batches: {}, Arrow bytes read: {:.0} MB, rows written: {}, duplicates dropped: {}{}, peak RSS: {}",
            self.batches,
            self.bytes as f64 / 1e6,
            self.rows_written,
            self.duplicates_dropped,
            if self.encoded_bytes > 0 { format!(", TDS bytes encoded: {:.0} MB", self.encoded_bytes as f64 / 1e6) } else { String::new() },
            self.peak_rss_bytes.map(|b| format!("{:.0} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "?".into())
        );
        if !self.child_tables.is_empty() {
            self.print_children();
        }
    }

    /// The child tables' table, on stderr (rates per CPU second of one thread).
    fn print_children(&self) {
        eprintln!("\nchild tables (MB: Arrow MB; gen: generating, enc: TDS bulk encoding into null, per CPU second of one thread; generating is part of the readers' remap + dedupe time)");
        eprintln!(
            "{:<26} {:>11} {:>11} {:>9} {:>12} {:>9} {:>12} {:>9} {:>10}",
            "table", "rows read", "written", "MB", "gen rows/s", "gen MB/s", "enc rows/s", "enc MB/s", "wall rows/s"
        );
        let opt = |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.p$}"));
        for c in &self.child_tables {
            eprintln!(
                "{:<26} {:>11} {:>11} {:>9.1} {:>12.0} {:>9.1} {:>12} {:>9} {:>10.0}",
                c.table,
                c.rows_read,
                c.rows_written,
                c.mb,
                c.generate_rows_per_cpu_second,
                c.generate_mb_per_cpu_second,
                opt(c.encode_rows_per_cpu_second, 0),
                opt(c.encode_arrow_mb_per_cpu_second, 1),
                c.rows_per_wall_second
            );
        }
    }
}
