//! `verify`: reconciles sources against a target, like the toolkit's own migration validation.
//!
//! Every source row (after the same remap and window as `copy`) must have its key in the
//! target; per server, the distinct source keys, the target's rows and both SnapshotUTC ranges
//! are compared, and a key held twice by the target is reported. Memory: the source keys
//! (8 bytes each, grouped by server) plus one server's target keys at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use arrow::array::AsArray;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::copy::iso;
use crate::pipeline::progress::Progress;
use crate::pipeline::Cancel;
use crate::schema::key;
use crate::sink::Target;
use crate::source::normalize::snapshot_ms;
use crate::source::{Projection, ReadRequest, Source};
use crate::transform::remap::ServerIdMap;
use crate::transform::Window;

/// What `verify` needs besides sources and target.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub server_map: Option<ServerIdMap>,
    pub window: Window,
    pub readers: usize,
    pub batch_rows: usize,
}

/// The comparison for one target server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCheck {
    pub server_id: i32,
    pub server_names: Vec<String>,
    /// Distinct (SnapshotUTC, ServerID) keys in the sources.
    pub source_keys: u64,
    pub source_first_utc: Option<String>,
    pub source_last_utc: Option<String>,
    /// Rows the target holds for this server (it may hold more than these sources gave it).
    pub target_rows: u64,
    pub target_first_utc: Option<String>,
    pub target_last_utc: Option<String>,
    /// Source keys absent from the target.
    pub missing: u64,
    /// Keys the target holds more than once.
    pub target_duplicates: u64,
    /// Up to 10 missing SnapshotUTC values, as examples.
    pub missing_examples: Vec<String>,
    pub ok: bool,
}

/// The verification report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub target: String,
    pub ok: bool,
    pub source_rows: u64,
    pub unknown_servers: Vec<String>,
    pub servers: Vec<ServerCheck>,
    pub elapsed_seconds: f64,
}

/// Runs the reconciliation.
pub fn run_verify(
    sources: &[Box<dyn Source>],
    target: &dyn Target,
    opts: &VerifyOptions,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let registry = target.known_servers()?;
    let map = match &opts.server_map {
        Some(m) => ServerIdMap::layered(m, &registry),
        None => registry,
    };
    let keys: Mutex<BTreeMap<i32, Vec<i64>>> = Mutex::new(BTreeMap::new());
    let names: Mutex<BTreeMap<i32, BTreeSet<String>>> = Mutex::new(BTreeMap::new());
    let unknown: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let bar = progress.phase("read source keys", None);
    fn poisoned<T>(_: T) -> Error {
        Error::Internal("verify state poisoned".into())
    }
    let rows: Vec<u64> = super::for_each_source(sources, opts.readers, cancel, |_, source| {
        let req = ReadRequest { projection: Projection::Keys, batch_rows: opts.batch_rows, after_run_id: None, time_ranges: None };
        let mut local: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut local_names: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        let mut local_unknown = BTreeSet::new();
        let mut n = 0u64;
        for batch in source.read(&req)? {
            cancel.check()?;
            let batch = batch?;
            let ts = snapshot_ms(&batch, key::SNAPSHOT_UTC);
            let name_col = batch.column(key::SERVER_NAME).as_string::<i32>();
            let ids = map.ids_for(batch.column(key::SERVER_NAME).as_ref(), &mut local_unknown);
            for r in 0..batch.num_rows() {
                let t = ts.value(r);
                if !opts.window.contains(t) {
                    continue;
                }
                n += 1;
                let id = ids.value(r);
                if id == 0 {
                    continue;
                }
                local.entry(id).or_default().push(t);
                let set = local_names.entry(id).or_default();
                if !set.contains(name_col.value(r)) {
                    set.insert(name_col.value(r).to_string());
                }
            }
            bar.inc(batch.num_rows() as u64);
        }
        let mut k = keys.lock().map_err(poisoned)?;
        for (id, mut v) in local {
            k.entry(id).or_default().append(&mut v);
        }
        let mut nm = names.lock().map_err(poisoned)?;
        for (id, s) in local_names {
            nm.entry(id).or_default().extend(s);
        }
        unknown.lock().map_err(poisoned)?.extend(local_unknown);
        Ok(n)
    })?;
    bar.finish();
    let keys = keys.into_inner().map_err(poisoned)?;
    let names = names.into_inner().map_err(poisoned)?;
    let unknown = unknown.into_inner().map_err(poisoned)?;

    let mut servers = Vec::new();
    for (id, mut src_keys) in keys {
        cancel.check()?;
        src_keys.sort_unstable();
        src_keys.dedup();
        let mut tgt_keys: Vec<i64> = Vec::new();
        for batch in target.existing_keys(&BTreeMap::from([(id, (i64::MIN, i64::MAX))]))? {
            let batch = batch?;
            tgt_keys.extend_from_slice(snapshot_ms(&batch, 0).values());
        }
        let target_rows = tgt_keys.len() as u64;
        tgt_keys.sort_unstable();
        let before = tgt_keys.len();
        tgt_keys.dedup();
        let target_duplicates = (before - tgt_keys.len()) as u64;
        let missing: Vec<i64> = src_keys.iter().copied().filter(|k| tgt_keys.binary_search(k).is_err()).collect();
        let ok = missing.is_empty() && target_duplicates == 0;
        servers.push(ServerCheck {
            server_id: id,
            server_names: names.get(&id).map(|s| s.iter().cloned().collect()).unwrap_or_default(),
            source_keys: src_keys.len() as u64,
            source_first_utc: src_keys.first().map(|&t| iso(t)),
            source_last_utc: src_keys.last().map(|&t| iso(t)),
            target_rows,
            target_first_utc: tgt_keys.first().map(|&t| iso(t)),
            target_last_utc: tgt_keys.last().map(|&t| iso(t)),
            missing: missing.len() as u64,
            target_duplicates,
            missing_examples: missing.iter().take(10).map(|&t| iso(t)).collect(),
            ok,
        });
    }
    let ok = unknown.is_empty() && servers.iter().all(|s| s.ok);
    Ok(VerifyReport {
        target: target.label().to_string(),
        ok,
        source_rows: rows.iter().sum(),
        unknown_servers: unknown.into_iter().collect(),
        servers,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}
