//! The report of `perfcopy bench`: per stage and end to end, with the machine it ran on.

use std::time::Duration;

use serde::Serialize;

use std::collections::BTreeMap;

use crate::pipeline::human::{self, wrap};

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
        if !self.child_tables.is_empty() {
            out.extend(self.child_lines());
        }
        out
    }

    /// The child tables' lines (rates per CPU second of one thread; `--json` has every figure).
    /// Into `null` the last columns are the TDS encoding's rates; into a stage or MonitoringDB,
    /// which encode on the writers' side, rows and MB written per wall-clock second of the copy.
    fn child_lines(&self) -> Vec<String> {
        let null = self.child_tables.iter().any(|c| c.encode_rows_per_cpu_second.is_some());
        let (legend, last) = if null {
            ("child tables, per second of one thread's CPU (generate: making the rows, part of the readers' remap + dedupe time; encode: TDS bulk rows into null):", ["encode", "encode"])
        } else {
            ("child tables (generate: per second of one thread's CPU, part of the readers' remap + dedupe time; wall: written per second of the whole copy):", ["wall", "wall"])
        };
        let mut out = vec![String::new(), wrap(legend, 4), format!("{:<14} {:>9} {:>9} {:>14} {:>14} {:>12}", "table", "written", "Arrow", "generate", last[0], last[1])];
        let wall = self.end_to_end_seconds;
        for c in &self.child_tables {
            let (rows, mb) = if null {
                (c.encode_rows_per_cpu_second.map_or_else(|| "-".into(), |r| human::rate(r, "rows")), c.encode_arrow_mb_per_cpu_second.map_or_else(|| "-".into(), |r| human::byte_rate(r * 1e6)))
            } else if wall > 0.0 {
                let written_mb = if c.rows_read > 0 { c.mb * c.rows_written as f64 / c.rows_read as f64 } else { 0.0 };
                (human::rate(c.rows_per_wall_second, "rows"), human::byte_rate(written_mb * 1e6 / wall))
            } else {
                ("-".into(), "-".into())
            };
            out.push(format!(
                "{:<14} {:>9} {:>9} {:>14} {:>14} {:>12}",
                human::short(c.table.strip_prefix("PerfSnapshot").unwrap_or(&c.table), 14),
                human::count(c.rows_written),
                human::bytes((c.mb * 1e6) as u64),
                human::rate(c.generate_rows_per_cpu_second, "rows"),
                rows,
                mb,
            ));
        }
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
                units: 1_234_567,
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

    #[test]
    fn child_table_lines_fit_80_columns_too() {
        use crate::pipeline::copy::{ChildReport, SourceReport};
        let table = "PerfSnapshotBackupHistory".to_string();
        let report = CopyReport {
            child_tables: vec![table.clone()],
            sources: vec![SourceReport { children: vec![ChildReport { table: table.clone(), rows_read: 123_456_789, rows_written: 120_000_000, ..Default::default() }], ..Default::default() }],
            elapsed_seconds: 10.0,
            ..Default::default()
        };
        let spec = SyntheticSpec { servers: 8, rows: 1_000, overlap: 0.05, seed: 1 };
        let meter = |rows, bytes, cpu_seconds| BTreeMap::from([(table.clone(), TableMeter { rows, bytes, cpu_seconds })]);
        let b = BenchReport::new(&spec, "null".into(), &report, 0).with_children(&report, &meter(123_456_789, 98_765_432_100, 2.0), &meter(120_000_000, 1, 4.0));
        let lines = b.human_lines();
        for l in lines.iter().flat_map(|l| l.lines()) {
            assert!(l.chars().count() <= human::COLUMNS, "{} columns: {l}", l.chars().count());
        }
        let c = &b.child_tables[0];
        assert_eq!((c.rows_read, c.rows_written), (123_456_789, 120_000_000));
        // 123.5M rows generated in 2 CPU seconds, 120M encoded in 4.
        assert!((c.generate_rows_per_cpu_second - 61_728_394.5).abs() < 1.0 && c.encode_rows_per_cpu_second == Some(30_000_000.0), "{c:?}");
        let text = lines.join("\n");
        assert!(text.contains("BackupHistory") && text.contains("30.0M rows/s"), "{text}");

        // Into a stage or MonitoringDB (nothing encoded on the readers' side): rows and MB
        // written per wall second of the copy, 120M rows in 10 s.
        let b = BenchReport::new(&spec, "127.0.0.1,1433/MonitoringDB (scratch table dbo.perfcopy_bench_1)".into(), &report, 0).with_children(&report, &meter(123_456_789, 98_765_432_100, 2.0), &BTreeMap::new());
        let lines = b.human_lines();
        for l in lines.iter().flat_map(|l| l.lines()) {
            assert!(l.chars().count() <= human::COLUMNS, "{} columns: {l}", l.chars().count());
        }
        let text = lines.join("\n");
        assert_eq!(b.child_tables[0].encode_rows_per_cpu_second, None);
        assert!(text.contains("wall") && text.contains("12.0M rows/s"), "{text}");
    }
}
