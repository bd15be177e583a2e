//! The `null` target of `perfcopy bench`: rows are encoded as TDS bulk-load ROW tokens (the
//! bytes a MonitoringDB load would send) and then discarded, so a benchmark measures the
//! pipeline and the encoding without a sink.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Result;
use crate::sink::{FinalMark, Load, LoadWriter, Recorded, SourceMeta, Target, WriteUnit};
use crate::source::{BatchIter, Source};
use crate::tds::encode::BulkLayout;
use crate::transform::remap::ServerIdMap;

/// A target that encodes and discards.
#[derive(Default)]
pub struct NullTarget {
    encoded: Arc<AtomicU64>,
}

impl NullTarget {
    /// A new null target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of TDS ROW tokens encoded so far.
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }
}

impl Target for NullTarget {
    fn label(&self) -> &str {
        "null (TDS-encoded, discarded)"
    }

    fn lock(&self) -> Result<Box<dyn std::any::Any + Send>> {
        Ok(Box::new(()))
    }

    fn known_servers(&self) -> Result<ServerIdMap> {
        Ok(ServerIdMap::new())
    }

    fn register_servers(&self, names: &BTreeSet<String>, known: &ServerIdMap) -> Result<Vec<(String, i32)>> {
        Ok(known.clone().register(names))
    }

    fn existing_keys(&self, _ranges: &BTreeMap<i32, (i64, i64)>) -> Result<BatchIter> {
        Ok(Box::new(std::iter::empty()))
    }

    fn existing_rows(&self, _ranges: &BTreeMap<i32, Vec<(i64, i64)>>) -> Result<BatchIter> {
        Ok(Box::new(std::iter::empty()))
    }

    fn watermark(&self, _source: &dyn Source) -> Result<Recorded> {
        Ok(Recorded::Nothing)
    }

    fn begin(&self, _workers: usize, _sources: Vec<SourceMeta>) -> Result<Box<dyn Load>> {
        Ok(Box::new(NullLoad { encoded: self.encoded.clone() }))
    }
}

struct NullLoad {
    encoded: Arc<AtomicU64>,
}

impl Load for NullLoad {
    fn writer(&self, _worker: usize) -> Result<Box<dyn LoadWriter>> {
        Ok(Box::new(NullWriter { encoded: self.encoded.clone(), layout: BulkLayout::documented(), buf: Vec::new() }))
    }

    fn commit(self: Box<Self>, _marks: Vec<FinalMark>) -> Result<()> {
        Ok(())
    }

    fn abort(self: Box<Self>, _reason: &str) {}
}

struct NullWriter {
    encoded: Arc<AtomicU64>,
    layout: BulkLayout,
    buf: Vec<u8>,
}

impl LoadWriter for NullWriter {
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()> {
        self.buf.clear();
        self.layout
            .encode(unit.rows, 0..unit.rows.num_rows(), &mut self.buf)
            .map_err(|m| crate::error::Error::Internal(format!("encoding TDS rows: {m}")))?;
        self.encoded.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
