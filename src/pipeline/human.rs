//! Numbers as people read them: SI counts and rates (`1.43M rows/s`, `12.3 MB/s`,
//! `850 rows/s`), byte sizes, durations, and an ETA that is given only when it can be told.
//!
//! Used by the progress bars and plain progress lines, the copy, verify and bench reports,
//! so every figure perfcopy prints for a person has one spelling.

use std::time::Duration;

use unit_prefix::NumberPrefix;

/// How long progress must have been made before an ETA is shown: the first batches' rate (a
/// key pass still warming caches, a bulk load still opening) says little about the rest.
pub const ETA_AFTER: Duration = Duration::from_secs(3);

/// Longer ETAs than this are not estimates but guesses (a stalled rate): none is shown.
const ETA_AT_MOST: Duration = Duration::from_secs(100 * 24 * 3600);

/// `x` with an SI prefix and three significant digits (`850`, `1.43k`, `14.3M`, `143G`);
/// below 1000, `decimals_below_10` digits after the point for values under 10 (rates), none
/// otherwise. `x` is finite and not negative.
fn si(x: f64, space: &str, decimals_below_10: usize) -> String {
    if x < 9.95 && decimals_below_10 > 0 && x.fract() != 0.0 {
        return format!("{x:.decimals_below_10$}{space}");
    }
    if x < 999.5 {
        return format!("{x:.0}{space}");
    }
    // Round first, so 999,950 is `1.00M`, not `1000k`.
    let x = round_significant(x, 3);
    if x >= 999.5e24 {
        // Past the largest prefix (yotta): not a figure anyone reads, and a rate this high is
        // an artefact of a near-zero time.
        return format!(">999{space}Y");
    }
    match NumberPrefix::decimal(x) {
        NumberPrefix::Standalone(v) => format!("{v:.0}{space}"),
        NumberPrefix::Prefixed(p, v) => {
            let decimals = if v >= 99.95 { 0 } else if v >= 9.995 { 1 } else { 2 };
            format!("{v:.decimals$}{space}{p}")
        }
    }
}

fn round_significant(x: f64, digits: i32) -> f64 {
    if x <= 0.0 {
        return x;
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - (digits - 1));
    (x / scale).round() * scale
}

/// A count with an SI prefix: `850`, `1.43k`, `1.00M`, `18.4E`.
pub fn count(n: u64) -> String {
    si(n as f64, "", 0)
}

/// A rate of `unit` per second: `850 rows/s`, `1.43M rows/s`; `- rows/s` when it is not a
/// number (nothing measured yet, or no time passed).
pub fn rate(per_second: f64, unit: &str) -> String {
    if !per_second.is_finite() || per_second < 0.0 {
        return format!("- {unit}/s");
    }
    format!("{} {unit}/s", si(per_second, "", 1))
}

/// A byte size in decimal units: `850 B`, `1.43 kB`, `12.3 MB`, `1.20 GB`.
pub fn bytes(n: u64) -> String {
    // `12.3 M` + `B`; kilo is `k` (SI).
    format!("{}B", si(n as f64, " ", 0))
}

/// A byte rate in decimal units: `12.3 MB/s`; `- MB/s` when it is not a number.
pub fn byte_rate(per_second: f64) -> String {
    if !per_second.is_finite() || per_second < 0.0 {
        return "- MB/s".into();
    }
    let s = si(per_second, " ", 1);
    format!("{s}B/s")
}

/// A duration as short as it can be read: `850 ms`, `4.2 s`, `42 s`, `3m 05s`, `2h 03m`,
/// `3d 04h`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 0.9995 {
        return format!("{:.0} ms", secs * 1000.0);
    }
    if secs < 9.95 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `n` rows in `elapsed`: `1.20M rows in 4.2 s (286k rows/s)`.
pub fn rows_in(n: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let per = if secs > 0.0 { n as f64 / secs } else { f64::NAN };
    format!("{} rows in {} ({})", count(n), duration(elapsed), rate(per, "rows"))
}

/// The time left to reach `total` from `done` at `per_second`, when it can be told: the
/// total is known and not yet reached, progress has been made for at least [`ETA_AFTER`]
/// (`progressing_for`: since the first rows, `None` before them), and the recent rate is a
/// positive number giving an ETA under 100 days. `None` otherwise: no ETA is better than a
/// wrong one.
pub fn eta(done: u64, total: Option<u64>, progressing_for: Option<Duration>, per_second: f64) -> Option<Duration> {
    let total = total?;
    if done >= total || progressing_for? < ETA_AFTER || !per_second.is_finite() || per_second <= 0.0 {
        return None;
    }
    let left = Duration::try_from_secs_f64((total - done) as f64 / per_second).ok()?;
    (left <= ETA_AT_MOST).then_some(left)
}

/// The width every line perfcopy prints for a person fits in.
pub const COLUMNS: usize = 80;

/// `text` wrapped at spaces to [`COLUMNS`], later lines indented by `indent` spaces. A word
/// longer than a line (a long path) stays whole on a line of its own.
pub fn wrap(text: &str, indent: usize) -> String {
    wrap_within(text, COLUMNS, indent)
}

/// [`wrap`] to `width` columns.
pub fn wrap_within(text: &str, width: usize, indent: usize) -> String {
    let pad = " ".repeat(indent);
    // Only at spaces: a flag (`--create-missing-tables`) or a path stays whole for copy and grep.
    let opts = textwrap::Options::new(width).subsequent_indent(&pad).break_words(false).word_splitter(textwrap::WordSplitter::NoHyphenation);
    textwrap::fill(text, opts)
}

/// An exact count with thousands separators (`1,432,949`), for tables that reconcile.
pub fn grouped(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

/// An exact count for a table column `width` wide: grouped (`1,432,949`) where that fits,
/// plain digits where those do, else with an SI prefix (`18.4E`), so the column never spills.
pub fn grouped_within(n: u64, width: usize) -> String {
    let g = grouped(n);
    if g.len() <= width {
        return g;
    }
    let digits = n.to_string();
    if digits.len() <= width {
        digits
    } else {
        count(n)
    }
}

/// `s` cut to `n` characters from the left (`…` and the tail, so a path keeps its file name),
/// for table columns and bar labels.
pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: Vec<char> = s.chars().rev().take(n.saturating_sub(1)).collect();
        format!("…{}", tail.into_iter().rev().collect::<String>())
    }
}

/// `s` in exactly `n` terminal columns: cut from the left as [`short`] does, then padded with
/// spaces, counting what a terminal shows (東京 takes four columns, not two), for the name
/// column of a table; `{:<n}` would count characters.
pub fn fit(s: &str, n: usize) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    let mut out = if s.width() <= n {
        s.to_string()
    } else {
        let mut tail = Vec::new();
        let mut w = 0;
        for c in s.chars().rev() {
            let cw = c.width().unwrap_or(0);
            if w + cw + 1 > n {
                break;
            }
            w += cw;
            tail.push(c);
        }
        format!("…{}", tail.into_iter().rev().collect::<String>())
    };
    let pad = n.saturating_sub(out.width());
    out.extend(std::iter::repeat_n(' ', pad));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_their_column_as_a_terminal_shows_them() {
        use unicode_width::UnicodeWidthStr;
        assert_eq!(fit("SQL07", 8), "SQL07   ");
        assert_eq!(fit("src/東京-SQL05.parquet", 20).width(), 20);
        assert_eq!(fit("src/東京-SQL05.parquet", 20), "…/東京-SQL05.parquet");
        assert_eq!(fit("src/東京-SQL05.parquet", 19), "…東京-SQL05.parquet");
        assert_eq!(fit("src/東京-SQL05.parquet", 18), "…京-SQL05.parquet ");
        assert_eq!(fit("東京東京東京", 5), "…東京");
        assert_eq!(fit("/data/exports/SQL07.parquet", 14), "…SQL07.parquet");
    }

    #[test]
    fn counts_have_three_significant_digits_and_an_si_prefix() {
        assert_eq!(count(0), "0");
        assert_eq!(count(7), "7");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1.00k");
        assert_eq!(count(1234), "1.23k");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(123_456), "123k");
        assert_eq!(count(999_499), "999k");
        // Rounds up into the next prefix instead of printing `1000k`.
        assert_eq!(count(999_500), "1.00M");
        assert_eq!(count(999_950), "1.00M");
        assert_eq!(count(1_432_949), "1.43M");
        assert_eq!(count(3_000_000_000), "3.00G");
        assert_eq!(count(u64::MAX), "18.4E");
    }

    #[test]
    fn rates_are_human_and_say_when_they_are_unknown() {
        assert_eq!(rate(1_432_949.0456, "rows"), "1.43M rows/s");
        assert_eq!(rate(850.0, "rows"), "850 rows/s");
        assert_eq!(rate(999.4, "rows"), "999 rows/s");
        assert_eq!(rate(999.6, "rows"), "1.00k rows/s");
        assert_eq!(rate(0.0, "rows"), "0 rows/s");
        assert_eq!(rate(0.26, "rows"), "0.3 rows/s");
        assert_eq!(rate(2.0, "rows"), "2 rows/s");
        assert_eq!(rate(12.6, "rows"), "13 rows/s");
        assert_eq!(rate(f64::NAN, "rows"), "- rows/s");
        assert_eq!(rate(f64::INFINITY, "rows"), "- rows/s");
        assert_eq!(rate(-1.0, "rows"), "- rows/s");
    }

    #[test]
    fn huge_rates_stay_one_short_token() {
        assert_eq!(rate(2.5e24, "rows"), "2.50Y rows/s");
        assert_eq!(rate(999.4e24, "rows"), "999Y rows/s");
        assert_eq!(rate(1e27, "rows"), ">999Y rows/s");
        assert_eq!(rate(f64::MAX, "rows"), ">999Y rows/s");
        assert_eq!(byte_rate(1e300), ">999 YB/s");
    }

    #[test]
    fn bytes_are_decimal_megabytes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_000), "1.00 kB");
        assert_eq!(bytes(12_345_678), "12.3 MB");
        assert_eq!(bytes(999_950_000), "1.00 GB");
        assert_eq!(bytes(1_200_000_000), "1.20 GB");
        assert_eq!(byte_rate(12_345_678.9), "12.3 MB/s");
        assert_eq!(byte_rate(0.0), "0 B/s");
        assert_eq!(byte_rate(f64::NAN), "- MB/s");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(Duration::ZERO), "0 ms");
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(999)), "999 ms");
        assert_eq!(duration(Duration::from_micros(999_600)), "1.0 s");
        assert_eq!(duration(Duration::from_millis(4_249)), "4.2 s");
        assert_eq!(duration(Duration::from_millis(9_960)), "10 s");
        assert_eq!(duration(Duration::from_secs(42)), "42 s");
        assert_eq!(duration(Duration::from_millis(59_600)), "1m 00s");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(duration(Duration::from_secs(2 * 3600 + 3 * 60 + 10)), "2h 03m");
        assert_eq!(duration(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 04h");
        assert_eq!(duration(Duration::MAX), format!("{}d {:02}h", u64::MAX / 86_400, u64::MAX % 86_400 / 3600));
    }

    #[test]
    fn rows_in_reads_as_a_sentence() {
        assert_eq!(rows_in(1_200_000, Duration::from_millis(4_200)), "1.20M rows in 4.2 s (286k rows/s)");
        assert_eq!(rows_in(0, Duration::ZERO), "0 rows in 0 ms (- rows/s)");
    }

    #[test]
    fn wrap_fits_80_columns_and_keeps_long_words_whole() {
        let path = format!("/{}", "d".repeat(90));
        let text = format!("{path}: has no table dbo.PerfSnapshotWaitStats; its rows are not copied (--create-missing-tables creates it)");
        let w = wrap(&text, 4);
        let lines: Vec<&str> = w.lines().collect();
        assert_eq!(lines[0], format!("{path}:"), "{w}");
        assert!(lines[1..].iter().all(|l| l.starts_with("    ") && l.chars().count() <= COLUMNS), "{w}");
        assert_eq!(w.split_whitespace().collect::<Vec<_>>(), text.split_whitespace().collect::<Vec<_>>());
        assert_eq!(wrap("short", 2), "short");
    }

    #[test]
    fn grouped_counts_are_exact() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_432_949), "1,432,949");
        assert_eq!(grouped_within(1_432_949, 9), "1,432,949");
        assert_eq!(grouped_within(1_432_949, 8), "1432949");
        assert_eq!(grouped_within(u64::MAX, 11), "18.4E");
    }

    #[test]
    fn short_keeps_the_tail() {
        assert_eq!(short("/data/exports/SQL07.parquet", 14), "…SQL07.parquet");
        assert_eq!(short("SQL07", 14), "SQL07");
        assert_eq!(short("äöü", 2), "…ü");
        assert_eq!(short("abc", 0), "…");
    }

    #[test]
    fn eta_only_when_honest() {
        let steady = Some(Duration::from_secs(10));
        assert_eq!(eta(500, Some(1500), steady, 100.0), Some(Duration::from_secs(10)));
        // No total, total reached or passed, a zero total: none.
        assert_eq!(eta(500, None, steady, 100.0), None);
        assert_eq!(eta(1500, Some(1500), steady, 100.0), None);
        assert_eq!(eta(1600, Some(1500), steady, 100.0), None);
        assert_eq!(eta(0, Some(0), steady, 100.0), None);
        // Not yet a few seconds of progress, or none at all: none.
        assert_eq!(eta(500, Some(1500), None, 100.0), None);
        assert_eq!(eta(500, Some(1500), Some(Duration::from_millis(2_999)), 100.0), None);
        assert_eq!(eta(500, Some(1500), Some(ETA_AFTER), 100.0), Some(Duration::from_secs(10)));
        // A stalled or unknown rate: none.
        assert_eq!(eta(500, Some(1500), steady, 0.0), None);
        assert_eq!(eta(500, Some(1500), steady, f64::NAN), None);
        assert_eq!(eta(500, Some(1500), steady, f64::INFINITY), None);
        assert_eq!(eta(500, Some(1500), steady, -5.0), None);
        // So slow it is a guess: none.
        assert_eq!(eta(0, Some(u64::MAX), steady, 1.0), None);
        assert_eq!(eta(0, Some(1_000_000), steady, 1e-9), None);
    }
}
