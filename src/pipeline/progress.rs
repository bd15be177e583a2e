//! Progress on stderr: indicatif bars on a terminal, plain periodic lines otherwise, or
//! nothing. Updated once per batch, never per row.
//!
//! Figures are in human units ([`super::human`]); an ETA is shown only when it can be told. A
//! bar appears only when there is work (no `0/0` bar), and a finished phase leaves one summary
//! line (`copy: 1.20M rows in 4.2 s (286k rows/s)`) where its bar was; a finished per-source bar
//! just goes (the report's table has each source's counts). Every line fits 80 columns.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::human;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines every few seconds otherwise.
    #[default]
    Auto,
    /// Bars (plain lines when stderr is not a terminal: bars need one).
    Bars,
    /// A plain line every few seconds.
    Plain,
    /// Nothing.
    Off,
}

/// Widest phase name in a bar or line; phases are named by perfcopy ("scan keys", "copy").
const PHASE_WIDTH: usize = 16;
/// Widest source label in a per-source bar (cut from the left: the file name stays).
const SOURCE_WIDTH: usize = 28;

/// Seconds between plain lines: 5, or `PERFCOPY_PROGRESS_SECONDS` (a log that wants fewer
/// lines, a test that wants some from a short run).
fn plain_every() -> Duration {
    const VAR: &str = "PERFCOPY_PROGRESS_SECONDS";
    let Ok(text) = std::env::var(VAR) else { return Duration::from_secs(5) };
    match text.trim().parse::<f64>().ok().and_then(|s| Duration::try_from_secs_f64(s).ok()).filter(|d| !d.is_zero()) {
        Some(d) => d,
        None => {
            eprintln!("perfcopy: warning: {VAR}={text:?} is not a positive number of seconds; using 5");
            Duration::from_secs(5)
        }
    }
}

/// Progress reporting for one command.
#[derive(Clone)]
pub struct Progress {
    mode: ProgressMode,
    multi: Option<MultiProgress>,
    plain_every: Duration,
}

impl Progress {
    /// Resolves `Auto` (and `Bars`) against whether stderr is a terminal.
    pub fn new(mode: ProgressMode) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let mode = match mode {
            ProgressMode::Auto | ProgressMode::Bars if terminal => ProgressMode::Bars,
            // indicatif draws nothing (and prints no message) where stderr is not a terminal.
            ProgressMode::Auto | ProgressMode::Bars => ProgressMode::Plain,
            m => m,
        };
        let multi = (mode == ProgressMode::Bars).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { mode, multi, plain_every: plain_every() }
    }

    /// Prints a message (above the bars when there are any), wrapped at 80 columns.
    pub fn message(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                // One column short: indicatif pads each line it draws to the terminal's width,
                // and a line that fills it exactly runs on into the next.
                let _ = m.println(human::wrap_within(text, human::COLUMNS - 1, 4));
            }
            None if self.mode != ProgressMode::Off => eprintln!("{}", human::wrap(text, 4)),
            None => {}
        }
    }

    /// An overall counter of `total` rows for a phase; it leaves a summary line when it
    /// finishes.
    pub fn phase(&self, name: &str, total: Option<u64>) -> Bar {
        self.bar(human::short(name, PHASE_WIDTH), total, true)
    }

    /// A per-source counter (bars only; plain mode reports the phase total).
    pub fn source(&self, name: &str, total: Option<u64>) -> Bar {
        self.bar(human::short(name, SOURCE_WIDTH), total, false)
    }

    fn bar(&self, name: String, total: Option<u64>, overall: bool) -> Bar {
        let counter = Arc::new(Counter { rows: AtomicU64::new(0), started: Instant::now(), first_rows: OnceLock::new() });
        let show = match (&self.multi, self.mode) {
            // Nothing to do: no bar, no line (a `0/0` bar says nothing).
            _ if total == Some(0) => Show::Nothing,
            (Some(m), _) => {
                // Hidden until the MultiProgress takes it: a bar of its own would draw its first
                // state straight to stderr, where the MultiProgress cannot clear it.
                let pb = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
                pb.set_style(bar_style(total.is_some(), overall, &counter));
                pb.set_prefix(name.clone());
                let pb = if overall { m.insert(0, pb) } else { m.add(pb) };
                Show::Bar { pb, multi: m.clone(), summary: overall }
            }
            (None, ProgressMode::Plain) if overall => {
                let (stop, wake) = crossbeam_channel::bounded::<()>(0);
                let (c, every, label) = (counter.clone(), self.plain_every, name.clone());
                let ticker = std::thread::spawn(move || {
                    let mut last = (Instant::now(), 0u64);
                    while let Err(RecvTimeoutError::Timeout) = wake.recv_timeout(every) {
                        let line = plain_line(&label, total, &c, &mut last);
                        eprintln!("{line}");
                    }
                });
                Show::Plain(Mutex::new(Some(Ticker { stop, thread: ticker })))
            }
            _ => Show::Nothing,
        };
        Bar { name, counter, show, finished: AtomicBool::new(false) }
    }
}

/// What a bar counts: rows done, since when, and since the first rows (for the ETA).
struct Counter {
    rows: AtomicU64,
    started: Instant,
    first_rows: OnceLock<Instant>,
}

impl Counter {
    fn progressing_for(&self) -> Option<Duration> {
        self.first_rows.get().map(Instant::elapsed)
    }
}

/// The bar's template: name, bar, rows done of the total, the recent rate and, for a phase,
/// an honest ETA; at their widest (`999k/999k`, `>999Y rows/s`, `ETA 23h 59m`) 79 columns,
/// one short of the terminal, so indicatif's padding never runs a bar into the next line.
fn bar_style(known_total: bool, overall: bool, counter: &Arc<Counter>) -> ProgressStyle {
    let template = match (known_total, overall) {
        (true, true) => format!("{{prefix:>{PHASE_WIDTH}.bold}} [{{bar:16.cyan/blue}}] {{done}}/{{total}} rows  {{rate}}{{eta}}"),
        (true, false) => format!("{{prefix:>{SOURCE_WIDTH}}} [{{bar:20}}] {{done}}/{{total}}  {{rate}}"),
        (false, true) => format!("{{prefix:>{PHASE_WIDTH}.bold}} {{spinner}} {{done}} rows  {{rate}}"),
        (false, false) => format!("{{prefix:>{SOURCE_WIDTH}}} {{spinner}} {{done}}  {{rate}}"),
    };
    let c = counter.clone();
    let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    style
        .progress_chars("=> ")
        .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&human::count(s.pos()));
        })
        .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&s.len().map(human::count).unwrap_or_default());
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&human::rate(s.per_sec(), "rows"));
        })
        .with_key("eta", move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            if let Some(left) = human::eta(s.pos(), s.len(), c.progressing_for(), s.per_sec()) {
                let _ = write!(w, "  ETA {}", human::duration(left));
            }
        })
}

/// A plain progress line: `copy: 1.43M/3.00M rows (47%), 286k rows/s, ETA 5.4 s`, with the
/// rate since the last line (`last`: when, and the rows then).
fn plain_line(name: &str, total: Option<u64>, c: &Counter, last: &mut (Instant, u64)) -> String {
    let n = c.rows.load(Ordering::Relaxed);
    let now = Instant::now();
    let secs = now.duration_since(last.0).as_secs_f64();
    let per = if secs > 0.0 { n.saturating_sub(last.1) as f64 / secs } else { f64::NAN };
    *last = (now, n);
    let rate = human::rate(per, "rows");
    match total {
        Some(t) => {
            let pct = (100.0 * n as f64 / t.max(1) as f64).min(100.0);
            let eta = human::eta(n, total, c.progressing_for(), per).map(|d| format!(", ETA {}", human::duration(d))).unwrap_or_default();
            format!("{name}: {}/{} rows ({pct:.0}%), {rate}{eta}", human::count(n), human::count(t))
        }
        None => format!("{name}: {} rows, {rate}", human::count(n)),
    }
}

/// A plain-lines thread and what stops it (dropping the sender wakes it to return).
struct Ticker {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

enum Show {
    Bar { pb: ProgressBar, multi: MultiProgress, summary: bool },
    Plain(Mutex<Option<Ticker>>),
    Nothing,
}

/// A row counter shown as a bar, a plain line, or nothing.
pub struct Bar {
    name: String,
    counter: Arc<Counter>,
    show: Show,
    finished: AtomicBool,
}

impl Bar {
    /// Adds rows done.
    pub fn inc(&self, rows: u64) {
        self.counter.rows.fetch_add(rows, Ordering::Relaxed);
        if rows > 0 {
            self.counter.first_rows.get_or_init(Instant::now);
        }
        if let Show::Bar { pb, .. } = &self.show {
            pb.inc(rows);
        }
    }

    /// Marks the bar finished: a phase's bar (or plain lines) gives way to one summary line,
    /// when it counted any rows; a source's bar goes.
    pub fn finish(&self) {
        self.end(true);
    }

    /// Ends the display; with `summary`, a finished phase's line replaces it. Without (an
    /// error or Ctrl-C ended the phase), nothing is left.
    fn end(&self, summary: bool) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        let n = self.counter.rows.load(Ordering::Relaxed);
        let line = || format!("{}: {}", self.name, human::rows_in(n, self.counter.started.elapsed()));
        match &self.show {
            Show::Bar { pb, multi, summary: phase } => {
                pb.finish_and_clear();
                if summary && *phase && n > 0 {
                    // Printed, not drawn: a line indicatif draws is padded to the terminal's
                    // width and ends at its edge, where the report's next blank line vanished.
                    multi.suspend(|| eprintln!("{}", line()));
                }
            }
            Show::Plain(ticker) => {
                if let Some(t) = ticker.lock().ok().and_then(|mut t| t.take()) {
                    t.stop();
                }
                if summary && n > 0 {
                    eprintln!("{}", line());
                }
            }
            Show::Nothing => {}
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.end(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(rows: u64, progressing: bool) -> Counter {
        let c = Counter { rows: AtomicU64::new(rows), started: Instant::now(), first_rows: OnceLock::new() };
        if progressing {
            let _ = c.first_rows.set(Instant::now() - Duration::from_secs(60));
        }
        c
    }

    #[test]
    fn plain_lines_use_human_units_and_an_eta_only_when_known() {
        let c = counter(1_500_000, true);
        let mut last = (Instant::now() - Duration::from_secs(5), 0);
        let line = plain_line("copy", Some(3_000_000), &c, &mut last);
        let re = regex::Regex::new(r"^copy: 1\.50M/3\.00M rows \(50%\), [0-9.]+k rows/s, ETA [0-9.]+ s$").unwrap();
        assert!(re.is_match(&line), "{line}");
        // Without a total: no percentage, no ETA.
        let mut last = (Instant::now() - Duration::from_secs(5), 0);
        let line = plain_line("scan keys", None, &c, &mut last);
        assert!(line.starts_with("scan keys: 1.50M rows, ") && !line.contains("ETA"), "{line}");
        // Before a few seconds of progress: no ETA.
        let fresh = counter(10, false);
        let mut last = (Instant::now() - Duration::from_secs(5), 0);
        assert!(!plain_line("copy", Some(100), &fresh, &mut last).contains("ETA"));
        // Stalled since the last line: rate 0, no ETA.
        let mut last = (Instant::now() - Duration::from_secs(5), 1_500_000);
        let line = plain_line("copy", Some(3_000_000), &c, &mut last);
        assert!(line.ends_with(", 0 rows/s"), "{line}");
    }

    #[test]
    fn plain_lines_fit_80_columns_at_their_widest() {
        let c = counter(u64::MAX / 2, true);
        let mut last = (Instant::now() - Duration::from_millis(1), 0);
        let name = human::short("a phase with a name longer than any perfcopy has", PHASE_WIDTH);
        let line = plain_line(&name, Some(u64::MAX), &c, &mut last);
        assert!(line.chars().count() <= 80, "{} columns: {line}", line.chars().count());
        let summary = format!("{name}: {}", human::rows_in(u64::MAX, Duration::from_secs(86_400 * 999)));
        assert!(summary.chars().count() <= 80, "{summary}");
    }

    #[test]
    fn a_zero_total_shows_nothing() {
        let p = Progress { mode: ProgressMode::Plain, multi: None, plain_every: Duration::from_millis(1) };
        let bar = p.phase("copy", Some(0));
        assert!(matches!(bar.show, Show::Nothing));
        let bar = p.phase("copy", Some(1));
        assert!(matches!(bar.show, Show::Plain(_)));
    }
}
