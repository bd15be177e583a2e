//! Whether a recorded watermark may be used: the trust rule of a re-run.
//!
//! A watermark says "every row of this source up to PerfSnapshotRunID N is in the target". It is
//! looked up by the source's identity only (a file's canonical path; for SQL Server the instance,
//! database and table as the server reports them), never by a server name found in the data.
//! It is used only when all of these hold, checked in this order; otherwise the source is read
//! whole, and the key check against the target keeps the copy exact:
//!
//! 1. the target can vouch for it (for MonitoringDB: perfcopy's own companion row, whose ledger
//!    row is still there, 'Success', with the same LastRunID);
//! 2. it records the SnapshotUTC of row N (older stage files did not);
//! 3. the source's server reports the same instance, database and incarnations as when it was
//!    recorded (no restore, no re-created database or table; [`SourceFacts::change_since`]);
//! 4. the source still has row N, with the same SnapshotUTC (a table re-created, or restored
//!    from an older backup and grown again, has another row there or none);
//! 5. row N's key (its ServerName's target ServerID, SnapshotUTC) is in the target (a target
//!    restored, purged or loaded elsewhere may not hold it);
//! 6. every child table of this copy was copied with the runs up to N (a `--runs-only` copy's
//!    watermark does not skip the runs whose children a later copy must bring).

use serde::Serialize;

use crate::error::Result;
use crate::pipeline::copy::iso;
use crate::sink::{Recorded, Target};
use crate::source::Source;
use crate::transform::remap::ServerIdMap;

/// Whether a watermark was used, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkStatus {
    /// Rows up to the watermark were skipped.
    Used,
    /// A watermark was recorded but could not be shown to belong to the source as it is now.
    SetAside,
    /// None recorded for this source.
    #[default]
    None,
    /// Not looked at (`--rescan`).
    Ignored,
}

/// What became of a source's watermark in one copy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatermarkReport {
    pub status: WatermarkStatus,
    /// The recorded PerfSnapshotRunID, when there was one.
    pub last_run_id: Option<i64>,
    /// Why it was set aside (or why there was none).
    pub reason: Option<String>,
}

impl WatermarkReport {
    /// The PerfSnapshotRunID rows are read after, when the watermark is used.
    pub fn after(&self) -> Option<i64> {
        (self.status == WatermarkStatus::Used).then_some(self.last_run_id).flatten()
    }

    /// One line for people: what was done with the watermark.
    pub fn describe(&self) -> String {
        match (self.status, self.last_run_id) {
            (WatermarkStatus::Used, Some(n)) => format!("resumed after PerfSnapshotRunID {n} (watermark checked: same row, key in the target)"),
            (WatermarkStatus::SetAside, _) => format!("watermark set aside: {}: read whole", self.reason.as_deref().unwrap_or("unverified")),
            (WatermarkStatus::Ignored, _) => "watermark ignored (--rescan): read whole".into(),
            _ => "no watermark recorded: read whole".into(),
        }
    }

    fn set_aside(run_id: Option<i64>, reason: String) -> WatermarkReport {
        WatermarkReport { status: WatermarkStatus::SetAside, last_run_id: run_id, reason: Some(reason) }
    }
}

/// Looks up and checks the watermark of `source` in `target` (see the module docs). `map` is
/// the target's ServerName -> ServerID map as this run uses it.
/// `child_tables`: the copy's.
pub fn check(source: &dyn Source, target: &dyn Target, map: &ServerIdMap, child_tables: &[&str], rescan: bool) -> Result<WatermarkReport> {
    if rescan {
        return Ok(WatermarkReport { status: WatermarkStatus::Ignored, ..Default::default() });
    }
    let w = match target.watermark(source)? {
        Recorded::Nothing => return Ok(WatermarkReport::default()),
        Recorded::Unusable { last_run_id, reason } => return Ok(WatermarkReport::set_aside(last_run_id, reason)),
        Recorded::Mark(w) => w,
    };
    let n = w.last_run_id;
    let aside = |reason: String| Ok(WatermarkReport::set_aside(Some(n), reason));
    let Some(t) = w.last_snapshot_ms else {
        return aside(format!("it was recorded without the SnapshotUTC of row {n} (an older perfcopy)"));
    };
    match (source.facts(), &w.facts) {
        (Some(now), Some(then)) => {
            if let Some(change) = now.change_since(then) {
                return aside(change);
            }
        }
        (Some(_), None) => return aside("it was recorded without the facts the source's server reports (an older perfcopy)".into()),
        (None, Some(then)) => return aside(format!("it was recorded for the SQL Server source {}/{}", then.instance, then.database)),
        (None, None) => {}
    }
    let Some(row) = source.row_at(n)? else {
        return aside(format!("row {n} no longer in the source"));
    };
    if row.snapshot_ms != t {
        return aside(format!("row {n} is another snapshot now (SnapshotUTC {}, recorded {})", iso(row.snapshot_ms), iso(t)));
    }
    let Some(server_id) = map.get(&row.server_name) else {
        return aside(format!("row {n}'s server '{}' has no ServerID in the target", row.server_name));
    };
    if !target.holds_key(server_id, t)? {
        return aside(format!("row {n}'s key (ServerID {server_id}, {}) is not in the target", iso(t)));
    }
    let missing: Vec<&str> = child_tables.iter().copied().filter(|c| !w.child_tables.iter().any(|h| h.eq_ignore_ascii_case(c))).collect();
    if !missing.is_empty() {
        return aside(format!("{} {} not copied with the runs up to row {n}", missing.join(", "), if missing.len() == 1 { "was" } else { "were" }));
    }
    Ok(WatermarkReport { status: WatermarkStatus::Used, last_run_id: Some(n), reason: None })
}
