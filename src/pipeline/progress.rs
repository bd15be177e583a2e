//! Progress on stderr: indicatif bars on a terminal, plain periodic lines otherwise, or
//! nothing. Updated once per batch, never per row.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines every few seconds otherwise.
    #[default]
    Auto,
    /// Bars.
    Bars,
    /// A plain line every few seconds.
    Plain,
    /// Nothing.
    Off,
}

/// Progress reporting for one command.
#[derive(Clone)]
pub struct Progress {
    mode: ProgressMode,
    multi: Option<MultiProgress>,
    plain_every: Duration,
}

impl Progress {
    /// Resolves `Auto` against whether stderr is a terminal.
    pub fn new(mode: ProgressMode) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let multi = (mode == ProgressMode::Bars).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { mode, multi, plain_every: Duration::from_secs(5) }
    }

    /// Prints a message line (above the bars when there are any).
    pub fn message(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None if self.mode != ProgressMode::Off => eprintln!("{text}"),
            None => {}
        }
    }

    /// An overall counter of `total` rows for a phase.
    pub fn phase(&self, name: &str, total: Option<u64>) -> Bar {
        self.bar(name, total, true)
    }

    /// A per-source counter (bars only; plain mode reports the phase total).
    pub fn source(&self, name: &str, total: Option<u64>) -> Bar {
        self.bar(name, total, false)
    }

    fn bar(&self, name: &str, total: Option<u64>, overall: bool) -> Bar {
        let count = Arc::new(AtomicU64::new(0));
        match (&self.multi, self.mode) {
            (Some(m), _) => {
                let pb = match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::new_spinner(),
                };
                let template = if overall {
                    "{prefix:>24.bold} [{bar:30.cyan/blue}] {human_pos}/{human_len} rows  {per_sec}  ETA {eta}"
                } else {
                    "{prefix:>24} [{bar:30}] {human_pos}/{human_len}  {per_sec}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    pb.set_style(style.progress_chars("=> "));
                }
                pb.set_prefix(truncate(name, 24));
                let pb = if overall { m.insert(0, pb) } else { m.add(pb) };
                Bar { count, pb: Some(pb), ticker: None }
            }
            (None, ProgressMode::Plain) if overall => {
                let stop = Arc::new(AtomicBool::new(false));
                let (c, s, every, name) = (count.clone(), stop.clone(), self.plain_every, name.to_string());
                std::thread::spawn(move || plain_ticker(&name, total, &c, &s, every));
                Bar { count, pb: None, ticker: Some(stop) }
            }
            _ => Bar { count, pb: None, ticker: None },
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect();
        format!("…{tail}")
    }
}

fn plain_ticker(name: &str, total: Option<u64>, count: &AtomicU64, stop: &AtomicBool, every: Duration) {
    let start = Instant::now();
    let mut next = every;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() < next {
            continue;
        }
        next += every;
        let n = count.load(Ordering::Relaxed);
        let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
        match total {
            Some(t) if t > 0 => {
                let eta = (t.saturating_sub(n)) as f64 / rate.max(1.0);
                eprintln!("{name}: {n}/{t} rows ({:.0}%), {:.0} rows/s, ETA {:.0}s", 100.0 * n as f64 / t as f64, rate, eta)
            }
            _ => eprintln!("{name}: {n} rows, {rate:.0} rows/s"),
        }
    }
}

/// A row counter shown as a bar, a plain line, or nothing.
pub struct Bar {
    count: Arc<AtomicU64>,
    pb: Option<ProgressBar>,
    ticker: Option<Arc<AtomicBool>>,
}

impl Bar {
    /// Adds rows done.
    pub fn inc(&self, rows: u64) {
        self.count.fetch_add(rows, Ordering::Relaxed);
        if let Some(pb) = &self.pb {
            pb.inc(rows);
        }
    }

    /// Marks the bar finished.
    pub fn finish(&self) {
        if let Some(pb) = &self.pb {
            pb.finish();
        }
        if let Some(t) = &self.ticker {
            t.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(t) = &self.ticker {
            t.store(true, Ordering::Relaxed);
        }
    }
}
