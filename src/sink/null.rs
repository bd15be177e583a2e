//! The `null` target of `perfcopy bench`: rows are encoded as TDS bulk-load ROW tokens (the
//! bytes a MonitoringDB load would send) and then discarded, so a benchmark measures the
//! pipeline and the encoding without a sink. Child rows are encoded as a load into a table
//! declared with exactly their columns ([`BulkLayout::declared`]: PerfSnapshotRunID, then the
//! values), each table's CPU time measured on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};

use crate::error::{Error, Result};
use crate::schema::{child, ChildTable};
use crate::sink::{FinalMark, Load, LoadWriter, SourceMeta, ThrowawayTarget, WriteUnit};
use crate::source::synthetic::{thread_cpu_seconds, TableMeters};
use crate::tds::encode::BulkLayout;

/// A target that encodes and discards.
#[derive(Default)]
pub struct NullTarget {
    encoded: Arc<AtomicU64>,
    children: Arc<TableMeters>,
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

    /// Per child table: rows encoded, TDS bytes and the CPU seconds the encoding took.
    pub fn child_meters(&self) -> &TableMeters {
        &self.children
    }
}

impl ThrowawayTarget for NullTarget {
    fn label(&self) -> &str {
        "null (TDS-encoded, discarded)"
    }

    fn begin(&self, _workers: usize, _sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>> {
        let mut layouts = Vec::with_capacity(children.len());
        for t in children {
            layouts.push(BulkLayout::declared(&t.target_columns()).map_err(|m| Error::Target { target: "null".into(), message: format!("table {}: {m}", t.sql_name()) })?);
        }
        Ok(Box::new(NullLoad { encoded: self.encoded.clone(), children: children.to_vec(), layouts: Arc::new(layouts), meters: self.children.clone() }))
    }
}

struct NullLoad {
    encoded: Arc<AtomicU64>,
    children: Vec<ChildTable>,
    layouts: Arc<Vec<BulkLayout>>,
    meters: Arc<TableMeters>,
}

impl Load for NullLoad {
    fn writer(&self, _worker: usize) -> Result<Box<dyn LoadWriter>> {
        Ok(Box::new(NullWriter {
            encoded: self.encoded.clone(),
            layout: BulkLayout::documented(),
            buf: Vec::new(),
            children: self.children.clone(),
            layouts: self.layouts.clone(),
            meters: self.meters.clone(),
        }))
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
    children: Vec<ChildTable>,
    layouts: Arc<Vec<BulkLayout>>,
    meters: Arc<TableMeters>,
}

impl NullWriter {
    /// Encodes one table's keyed child rows as their MonitoringDB load would send them: a
    /// PerfSnapshotRunID per row (here the row's number: the target's IDs are not known),
    /// then the values.
    fn encode_children(&mut self, table: usize, keyed: &RecordBatch) -> Result<()> {
        if keyed.num_rows() == 0 {
            return Ok(());
        }
        let started = thread_cpu_seconds();
        let t = &self.children[table];
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..keyed.num_rows() as i64))];
        cols.extend_from_slice(&keyed.columns()[child::FIRST_VALUE..]);
        let rows = RecordBatch::try_new(t.target_schema(), cols).map_err(Error::arrow(format!("null target {}", t.name)))?;
        self.buf.clear();
        self.layouts[table].encode(&rows, 0..rows.num_rows(), &mut self.buf).map_err(|m| Error::Internal(format!("encoding TDS rows of {}: {m}", t.name)))?;
        self.encoded.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.meters.add(t.name, rows.num_rows() as u64, self.buf.len() as u64, thread_cpu_seconds() - started);
        Ok(())
    }
}

impl LoadWriter for NullWriter {
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()> {
        self.buf.clear();
        self.layout
            .encode(unit.rows, 0..unit.rows.num_rows(), &mut self.buf)
            .map_err(|m| crate::error::Error::Internal(format!("encoding TDS rows: {m}")))?;
        self.encoded.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        for (i, kids) in unit.children.iter().enumerate() {
            self.encode_children(i, kids)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
