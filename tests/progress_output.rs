//! What a person sees of a copy (issue 15, "progress people can read"): in a real 80-column
//! terminal (tmux), bars in human units, no `0/0` bar, finished bars collapsed into one summary
//! line each, nothing wider than 80 columns; without a terminal, plain lines in the same units;
//! with `--progress off`, no progress at all.
//!
//! The terminal test needs tmux: without it, it says why and passes, except under CI (`CI` set),
//! where a missing tmux is a failure (`.ci/run` installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use regex::Regex;

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("perfcopy")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Three generated sources of 100,000 runs each (no child tables), in `dir/sources`.
fn sources(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("sources");
    let o = Command::new(bin())
        .args(["generate", "--out", s(&out), "--servers", "3", "--rows", "300000", "--child-tables", "none", "--seed", "7"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(o.status.success(), "generate: {}", stderr(&o));
    out
}

/// A count or rate figure as `human::count` spells it: `850`, `1.43k`, `300k`, `-`.
const HUMAN: &str = r"(?:\d{1,3}(?:\.\d{1,2})?[kMGTPEZY]?|-)";
/// A duration as `human::duration` spells it.
const DURATION: &str = r"(?:\d+ ms|\d+(?:\.\d)? s|\d+m \d\ds|\d+h \d\dm|\d+d \d\dh)";

/// The summary line a finished phase leaves: `copy: 300k rows in 1.2 s (250k rows/s)`.
fn summary(phase: &str) -> Regex {
    Regex::new(&format!(r"^{phase}: {HUMAN} rows in {DURATION} \({HUMAN} rows/s\)$")).unwrap()
}

/// Checks what any output of perfcopy must be: every line within 80 columns, no `0/0` bar, and
/// every rate in human units (no `1,432,949.0456/s`).
fn assert_readable(what: &str, text: &str) {
    let rate = Regex::new(r"(\S+) (?:rows|[kMGTPEZY]?B)/s").unwrap();
    let human = Regex::new(&format!(r"^[(\[]?{HUMAN}$")).unwrap();
    let zero_bar = Regex::new(r"\b0/0\b").unwrap();
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{what}: a line of {} columns: {line:?}\n{text}", line.chars().count());
        assert!(!zero_bar.is_match(line), "{what}: a 0/0 bar: {line:?}\n{text}");
        for c in rate.captures_iter(line) {
            assert!(human.is_match(&c[1]), "{what}: a rate not in human units: {:?} in {line:?}\n{text}", &c[0]);
        }
        // indicatif's own `{per_sec}` (`1,432,949.0456/s`) has no unit.
        assert!(!Regex::new(r"\d/s\b").unwrap().is_match(line), "{what}: a rate without a unit: {line:?}\n{text}");
    }
}

/// A bar still on screen: `[=====>   ]`.
fn unfinished_bar() -> Regex {
    Regex::new(r"\[[=> ]{3,}\]").unwrap()
}

/// Runs `script` in a detached 80x45 tmux session on its own server socket; returns every
/// distinct screen seen while it ran, and the last (with its scrollback, wrapped lines joined,
/// so a line wider than 80 shows as one).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(script: &str, env: &[(&str, &str)]) -> (Vec<String>, String) {
        let t = Tmux { socket: format!("perfcopy-progress-{}-{}", std::process::id(), rand_suffix()) };
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &t.socket, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "45", "-s", "t"]);
        cmd.arg(format!("{script}; echo PERFCOPY-DONE-$?; sleep 600"));
        cmd.env_remove("RUST_LOG").env_remove("NO_COLOR").env_remove("TMUX").env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "tmux new-session: {}", stderr(&o));
        let mut screens: Vec<String> = Vec::new();
        // A guard against a hang, not a timing assertion: a copy of 300k rows takes seconds.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let screen = t.capture(false);
            if screens.last() != Some(&screen) {
                screens.push(screen.clone());
            }
            if screen.contains("PERFCOPY-DONE-") {
                break;
            }
            assert!(Instant::now() < deadline, "perfcopy did not finish in tmux:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let last = t.capture(true);
        (screens, last)
    }

    fn capture(&self, history: bool) -> String {
        let mut args = vec!["-L", &self.socket, "capture-pane", "-p", "-J", "-t", "t"];
        if history {
            args.extend(["-S", "-"]);
        }
        let o = Command::new("tmux").args(&args).output().unwrap();
        assert!(o.status.success(), "tmux capture-pane: {}", stderr(&o));
        logical_lines(&String::from_utf8_lossy(&o.stdout)).join("\n").trim_end().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// The lines as printed, from a capture with wrapped lines joined (`-J`, which keeps trailing
/// blanks): indicatif pads every line it draws with blanks to the terminal's width and lets the
/// terminal wrap to the next, so a joined line whose 80th column is such a blank is split there.
/// A line perfcopy printed wider than 80 has text in its 80th column and stays whole.
fn logical_lines(capture: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in capture.lines() {
        let mut rest: Vec<char> = line.chars().collect();
        while rest.len() > 80 && rest[79] == ' ' {
            let tail = rest.split_off(80);
            out.push(rest.iter().collect::<String>().trim_end().to_string());
            rest = tail;
        }
        out.push(rest.iter().collect::<String>().trim_end().to_string());
    }
    out
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn have_tmux() -> bool {
    let found = Command::new("tmux").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        assert!(std::env::var_os("CI").is_none(), "tmux is missing, and CI is set: .ci/run must install it");
        eprintln!("progress_output: tmux is not installed; the terminal test is skipped (apt-get install tmux)");
    }
    found
}

/// Shell-quotes a path for the tmux command line.
fn q(p: &Path) -> String {
    format!("'{}'", s(p).replace('\'', r"'\''"))
}

#[test]
fn in_an_80_column_terminal_bars_are_human_collapse_when_done_and_nothing_is_wider() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = sources(dir.path());
    let stage = dir.path().join("stage");
    let copy = format!("{} copy --from {} --stage {} --register-servers --batch-rows 2000", q(&bin()), q(&src), q(&stage));
    // The copy, then a re-run that has nothing to copy (a phase with no work shows no bar).
    let (screens, last) = Tmux::run(&format!("{copy} && echo PERFCOPY-RERUN && {copy}"), &[]);
    assert!(last.contains("PERFCOPY-DONE-0"), "a copy failed:\n{last}");

    for screen in &screens {
        assert_readable("a screen while copying", screen);
    }
    assert_readable("the final screen", &last);
    // Bars seen while the copy ran (if it ran long enough to be caught) are in human units.
    let bar = Regex::new(&format!(r"^ *copy \[[=> ]+\] {HUMAN}/{HUMAN} rows  {HUMAN} rows/s(  ETA {DURATION})?$")).unwrap();
    let bars_seen = screens.iter().flat_map(|s| s.lines()).filter(|l| bar.is_match(l)).count();
    eprintln!("progress_output: {} screens captured while running, {bars_seen} copy bars among them", screens.len());

    let (first, rerun) = last.split_once("PERFCOPY-RERUN").unwrap_or_else(|| panic!("no re-run marker:\n{last}"));
    // The first run: each finished phase left one summary line, and no bar is left.
    let lines: Vec<&str> = first.lines().collect();
    for phase in ["scan keys", "copy"] {
        let n = lines.iter().filter(|l| summary(phase).is_match(l)).count();
        assert_eq!(n, 1, "one summary line for {phase}:\n{first}");
    }
    assert!(lines.iter().any(|l| l.starts_with("copy: 300k rows in ")), "all 300k rows copied:\n{first}");
    assert!(!unfinished_bar().is_match(&last), "a bar is left on screen:\n{last}");
    assert!(lines.iter().any(|l| l.starts_with("total ")), "the report's total line:\n{first}");
    // The re-run resumes after each source's watermark and reads nothing: no phase has work, so
    // no bar was drawn and no summary line left (a `0/0` bar or `0 rows` line says nothing).
    let rerun_lines: Vec<&str> = rerun.lines().collect();
    assert!(!rerun_lines.iter().any(|l| l.trim_start().starts_with("scan keys") || l.trim_start().starts_with("copy")), "{rerun}");
    assert!(rerun_lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["total", "0", "0", "0", "0", "0"]), "{rerun}");
    for screen in &screens {
        if let Some((_, during_rerun)) = screen.split_once("PERFCOPY-RERUN") {
            assert!(!during_rerun.lines().any(|l| l.trim_start().starts_with("copy [")), "a bar with no work:\n{screen}");
        }
    }
}

/// `perfcopy copy` of `src` into `stage` with `--progress mode`, stderr a pipe; plain lines
/// every 50 ms, so even a short copy prints some (how many is up to the machine).
fn copy_without_terminal(src: &Path, stage: &Path, mode: &str) -> Output {
    Command::new(bin())
        .args(["copy", "--from", s(src), "--stage", s(stage), "--register-servers", "--batch-rows", "2000", "--progress", mode])
        .env("PERFCOPY_PROGRESS_SECONDS", "0.05")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn without_a_terminal_progress_is_plain_lines_in_the_same_units() {
    let dir = tempfile::tempdir().unwrap();
    let src = sources(dir.path());
    for mode in ["plain", "bars", "auto"] {
        let stage = dir.path().join(format!("stage-{mode}"));
        let o = copy_without_terminal(&src, &stage, mode);
        let err = stderr(&o);
        assert!(o.status.success(), "{mode}: {err}");
        assert_readable(mode, &err);
        // `bars` and `auto` without a terminal fall back to plain lines: the same lines.
        let periodic = Regex::new(&format!(r"^copy: {HUMAN}/300k rows \(\d{{1,3}}%\), {HUMAN} rows/s(, ETA {DURATION})?$")).unwrap();
        let scanning = Regex::new(&format!(r"^scan keys: {HUMAN} rows, {HUMAN} rows/s$")).unwrap();
        let mut periodic_lines = 0;
        for l in err.lines().filter(|l| l.starts_with("copy:") || l.starts_with("scan keys:")) {
            let ok = summary("copy").is_match(l) || summary("scan keys").is_match(l) || periodic.is_match(l) || scanning.is_match(l);
            assert!(ok, "{mode}: not a progress line: {l:?}\n{err}");
            periodic_lines += usize::from(periodic.is_match(l) || scanning.is_match(l));
        }
        eprintln!("progress_output: {mode}: {periodic_lines} periodic lines");
        assert_eq!(err.lines().filter(|l| summary("scan keys").is_match(l)).count(), 1, "{mode}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("copy: 300k rows in ")).count(), 1, "{mode}: {err}");
        assert!(!err.contains('\u{1b}'), "{mode}: escape sequences without a terminal: {err:?}");
    }
}

#[test]
fn progress_off_prints_no_progress_only_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let src = sources(dir.path());
    let stage = dir.path().join("stage");
    let o = copy_without_terminal(&src, &stage, "off");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_readable("--progress off", &err);
    let progress = Regex::new(r"^(scan keys|copy|analyse):").unwrap();
    assert!(!err.lines().any(|l| progress.is_match(l)), "progress lines with --progress off:\n{err}");
    assert!(!unfinished_bar().is_match(&err) && !err.contains('\u{1b}'), "{err}");
    // The report is still there.
    assert!(err.lines().any(|l| l.starts_with("total ")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("read 300k rows in ")), "{err}");
}
