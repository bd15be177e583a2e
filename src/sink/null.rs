//! The `null` target of `perfcopy bench`: rows are encoded as TDS bulk-load ROW tokens (the
//! bytes a MonitoringDB load would send) and then discarded, so a benchmark measures the
//! pipeline and the encoding without a sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Result;
use crate::sink::{FinalMark, Load, LoadWriter, SourceMeta, ThrowawayTarget, WriteUnit};
use crate::tds::encode::BulkLayout;

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

impl ThrowawayTarget for NullTarget {
    fn label(&self) -> &str {
        "null (TDS-encoded, discarded)"
    }

    fn begin(&self, _workers: usize, _sources: Vec<SourceMeta>, _children: &[crate::schema::ChildTable]) -> Result<Box<dyn Load>> {
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
