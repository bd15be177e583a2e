//! The report of `perfcopy bench`: per stage and end to end, with the machine it ran on.

use std::time::Duration;

use serde::Serialize;

use crate::pipeline::human::{self, wrap};

use crate::pipeline::copy::CopyReport;
use crate::source::synthetic::SyntheticSpec;

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
        }
    }

    /// The human table, on stderr.
    pub fn print_human(&self) {
        for line in self.human_lines() {
            eprintln!("{line}");
        }
    }

    /// The human table's lines, each within 80 columns.
    fn human_lines(&self) -> Vec<String> {
        let secs = |s: f64| human::duration(Duration::try_from_secs_f64(s).unwrap_or_default());
        let row = |stage: &str, s: f64, rows: f64, mb: f64| format!("{:<22} {:>14} {:>16} {:>12}", stage, secs(s), human::rate(rows, "rows"), human::byte_rate(mb * 1e6));
        let mut out = vec![
            String::new(),
            wrap(&format!("perfcopy bench: {} rows, {} servers, {:.0}% overlap -> {}", human::count(self.rows), self.servers, self.overlap * 100.0, self.target), 4),
            format!("machine: {}", self.machine),
            format!("{:<22} {:>14} {:>16} {:>12}", "stage", "thread time", "rows", "bytes (Arrow)"),
        ];
        for s in &self.stages {
            out.push(row(s.stage, s.thread_seconds, s.rows_per_second, s.mb_per_second));
        }
        out.push(row("end to end (wall)", self.end_to_end_seconds, self.end_to_end_rows_per_second, self.end_to_end_mb_per_second));
        out.push(format!(
            "queues: readers waited {} for writers, writers {} for readers",
            secs(self.readers_waiting_on_queue_seconds),
            secs(self.writers_waiting_on_queue_seconds)
        ));
        out.push(format!("bottleneck: {}", self.bottleneck));
        out.push(format!(
            "batches: {}, Arrow bytes read: {}{}",
            human::grouped(self.batches),
            human::bytes(self.bytes),
            if self.encoded_bytes > 0 { format!(", TDS bytes encoded: {}", human::bytes(self.encoded_bytes)) } else { String::new() }
        ));
        out.push(format!(
            "rows written: {}, duplicates dropped: {}, peak RSS: {}",
            human::grouped(self.rows_written),
            human::grouped(self.duplicates_dropped),
            self.peak_rss_bytes.map(human::bytes).unwrap_or_else(|| "?".into())
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::copy::{CopyReport, StageTimes, Totals};

    #[test]
    fn the_bench_report_is_human_and_fits_80_columns() {
        let report = CopyReport {
            target: "null".into(),
            totals: Totals { rows_read: 100_000_000, rows_written: 95_000_000, duplicates_dropped: 5_000_000, ..Default::default() },
            stages: StageTimes {
                batches: 1_234_567,
                bytes_read: 12_345_678_901,
                read_seconds: 12.5,
                transform_seconds: 3.25,
                readers_waiting_on_queue_seconds: 0.5,
                write_seconds: 70.0,
                writers_waiting_on_queue_seconds: 1.5,
                peak_rss_bytes: Some(987_654_321),
            },
            elapsed_seconds: 70.0,
            ..Default::default()
        };
        let spec = SyntheticSpec { servers: 999, rows: 100_000_000, overlap: 0.05, seed: 1 };
        let b = BenchReport::new(&spec, format!("/data/{}/bench-stage", "scratch".repeat(8)), &report, 45_678_901_234);
        let lines = b.human_lines();
        for l in lines.iter().flat_map(|l| l.lines()) {
            assert!(l.chars().count() <= human::COLUMNS, "{} columns: {l}", l.chars().count());
        }
        let text = lines.join("\n");
        // 100M rows in 12.5 read-seconds, 12.3 GB in 70 s end to end.
        assert!(text.contains("8.00M rows/s") && text.contains("176 MB/s") && text.contains("1.43M rows/s"), "{text}");
        assert!(text.contains("Arrow bytes read: 12.3 GB, TDS bytes encoded: 45.7 GB") && text.contains("peak RSS: 988 MB"), "{text}");
        assert!(text.contains("bottleneck: readers"), "{text}");
        assert!(!text.contains("1428571.4"), "{text}");
    }
}
