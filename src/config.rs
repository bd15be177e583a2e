//! Raw flags -> one validated plan. Every cross-flag check lives here; nothing deeper in the
//! pipeline re-checks a flag.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::cli::{CopyArgs, GenerateArgs, SourceArgs, VerifyArgs};
use crate::error::{Error, Result};
use crate::pipeline::copy::CopyOptions;
use crate::pipeline::verify::VerifyOptions;
use crate::sink::stage::StageOptions;
use crate::source::synthetic::SyntheticSpec;
use crate::source::SourceSpec;
use crate::transform::remap::ServerIdMap;
use crate::transform::Window;

fn usage(flag: &str, message: impl Into<String>) -> Error {
    Error::Usage { flag: flag.into(), message: message.into() }
}

/// Parses an ISO 8601 time as UTC milliseconds: a date, a date-time without zone (taken as
/// UTC), or a date-time with `Z` or an offset. Sub-millisecond digits are refused (SnapshotUTC
/// is DATETIME2(3)).
pub fn parse_utc_ms(flag: &str, text: &str) -> Result<i64> {
    let t = text.trim();
    let parsed: Option<DateTime<Utc>> = DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .map(|n| n.and_utc())
        })
        .or_else(|| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|n| n.and_utc()));
    let dt = parsed.ok_or_else(|| usage(flag, format!("'{text}' is not an ISO 8601 UTC time (e.g. 2024-01-31 or 2024-01-31T06:00:00Z)")))?;
    if dt.timestamp_subsec_nanos() % 1_000_000 != 0 {
        return Err(usage(flag, format!("'{text}' has sub-millisecond digits; SnapshotUTC has millisecond precision")));
    }
    Ok(dt.timestamp_millis())
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Validated source-side settings shared by copy and verify.
pub struct SourcePlan {
    pub specs: Vec<SourceSpec>,
    pub server_map: Option<ServerIdMap>,
    pub window: Window,
    pub readers: usize,
    pub batch_rows: usize,
}

fn source_plan(a: &SourceArgs) -> Result<SourcePlan> {
    let since = a.since.as_deref().map(|t| parse_utc_ms("--since", t)).transpose()?;
    let until = a.until.as_deref().map(|t| parse_utc_ms("--until", t)).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(usage("--since", format!("--since ({}) must be before --until ({})", a.since.as_deref().unwrap_or(""), a.until.as_deref().unwrap_or(""))));
        }
    }
    if a.batch_rows == 0 {
        return Err(usage("--batch-rows", "must be at least 1"));
    }
    let readers = a.readers.unwrap_or_else(default_threads);
    if readers == 0 {
        return Err(usage("--readers", "must be at least 1"));
    }
    let server_map = a.server_map.as_deref().map(ServerIdMap::from_csv).transpose()?;
    Ok(SourcePlan {
        specs: a.from.iter().map(|f| SourceSpec::parse(f)).collect(),
        server_map,
        window: Window { since, until },
        readers,
        batch_rows: a.batch_rows,
    })
}

/// A validated copy.
pub struct CopyPlan {
    pub sources: SourcePlan,
    pub copy: CopyOptions,
    pub stage: StageOptions,
}

/// Validates `copy` flags.
pub fn copy_plan(a: &CopyArgs) -> Result<CopyPlan> {
    let sources = source_plan(&a.src)?;
    let writers = a.writers.unwrap_or_else(default_threads);
    if writers == 0 {
        return Err(usage("--writers", "must be at least 1"));
    }
    if a.queue_depth == 0 {
        return Err(usage("--queue-depth", "must be at least 1"));
    }
    if !(1..=22).contains(&a.zstd_level) {
        return Err(usage("--zstd-level", "must be between 1 and 22"));
    }
    if a.row_group_rows == 0 {
        return Err(usage("--row-group-rows", "must be at least 1"));
    }
    if a.stage.exists() && !a.stage.is_dir() {
        return Err(usage("--stage", format!("'{}' exists and is not a directory", a.stage.display())));
    }
    Ok(CopyPlan {
        copy: CopyOptions {
            server_map: sources.server_map.clone(),
            register_servers: a.register_servers,
            window: sources.window,
            readers: sources.readers,
            writers,
            batch_rows: sources.batch_rows,
            queue_depth: a.queue_depth,
            dry_run: a.dry_run,
            rescan: a.rescan,
        },
        stage: StageOptions { zstd_level: a.zstd_level, row_group_rows: a.row_group_rows, batch_rows: sources.batch_rows },
        sources,
    })
}

/// A validated verify.
pub struct VerifyPlan {
    pub sources: SourcePlan,
    pub verify: VerifyOptions,
}

/// Validates `verify` flags.
pub fn verify_plan(a: &VerifyArgs) -> Result<VerifyPlan> {
    let sources = source_plan(&a.src)?;
    if !a.stage.is_dir() {
        return Err(usage("--stage", format!("'{}' is not a stage directory", a.stage.display())));
    }
    Ok(VerifyPlan {
        verify: VerifyOptions {
            server_map: sources.server_map.clone(),
            window: sources.window,
            readers: sources.readers,
            batch_rows: sources.batch_rows,
        },
        sources,
    })
}

/// Validates `generate` flags.
pub fn generate_spec(a: &GenerateArgs) -> Result<SyntheticSpec> {
    if a.servers == 0 {
        return Err(usage("--servers", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&a.overlap) {
        return Err(usage("--overlap", format!("{} is not a fraction between 0 and 1", a.overlap)));
    }
    Ok(SyntheticSpec { servers: a.servers, rows: a.rows, overlap: a.overlap, seed: a.seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iso_times_as_utc_ms() {
        assert_eq!(parse_utc_ms("--since", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_utc_ms("--since", "1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert_eq!(parse_utc_ms("--since", "1970-01-01T00:00:01.250").unwrap(), 1_250);
        assert_eq!(parse_utc_ms("--since", "1970-01-01T02:00:00+02:00").unwrap(), 0);
        assert!(parse_utc_ms("--since", "yesterday").unwrap_err().to_string().contains("--since"));
        assert!(parse_utc_ms("--until", "1970-01-01T00:00:00.0001Z").unwrap_err().to_string().contains("sub-millisecond"));
    }
}
