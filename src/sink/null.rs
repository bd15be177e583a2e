//! The `null` target of `perfcopy bench`: rows are encoded as TDS bulk-load ROW tokens (the
//! bytes a MonitoringDB load would send) and then discarded, so a benchmark measures the
//! pipeline and the encoding without a sink.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int32Type, TimestampMillisecondType};

use crate::error::Result;
use crate::sink::{Load, LoadWriter, SourceMeta, Target, Watermark, WriteUnit, WrittenRows};
use crate::source::{BatchIter, Source};
use crate::transform::remap::ServerIdMap;

/// Days from 0001-01-01 (TDS DATE epoch) to 1970-01-01.
const DAYS_TO_UNIX_EPOCH: i64 = 719_162;

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

    fn watermark(&self, _source: &dyn Source) -> Result<Option<Watermark>> {
        Ok(None)
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
        Ok(Box::new(NullWriter { encoded: self.encoded.clone(), buf: Vec::new(), written: WrittenRows::new() }))
    }

    fn commit(self: Box<Self>, _watermarks: Vec<Watermark>) -> Result<()> {
        Ok(())
    }

    fn abort(self: Box<Self>, _reason: &str) {}
}

struct NullWriter {
    encoded: Arc<AtomicU64>,
    buf: Vec<u8>,
    written: WrittenRows,
}

impl LoadWriter for NullWriter {
    fn write(&mut self, unit: WriteUnit<'_>) -> Result<()> {
        self.buf.clear();
        encode_rows(unit.rows, &mut self.buf);
        self.encoded.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        for (server, part) in crate::pipeline::copy::split_by_server(unit.rows)? {
            *self.written.entry(server).or_default() += part.num_rows() as u64;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<WrittenRows> {
        Ok(self.written)
    }
}

fn put_nvarchar(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => buf.extend_from_slice(&[0xff, 0xff]),
        Some(s) => {
            let at = buf.len();
            buf.extend_from_slice(&[0, 0]);
            if s.is_ascii() {
                // UTF-16LE of ASCII is each byte followed by a zero byte.
                let start = buf.len();
                buf.resize(start + 2 * s.len(), 0);
                for (slot, &b) in buf[start..].chunks_exact_mut(2).zip(s.as_bytes()) {
                    slot[0] = b;
                }
            } else {
                for u in s.encode_utf16() {
                    buf.extend_from_slice(&u.to_le_bytes());
                }
            }
            let len = (buf.len() - at - 2) as u16;
            buf[at..at + 2].copy_from_slice(&len.to_le_bytes());
        }
    }
}

fn put_decimal(buf: &mut Vec<u8>, v: Option<i128>, bytes: usize) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1 + bytes as u8);
            buf.push(u8::from(v >= 0));
            buf.extend_from_slice(&v.unsigned_abs().to_le_bytes()[..bytes]);
        }
    }
}

fn put_intn(buf: &mut Vec<u8>, v: Option<i32>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(4);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn opt(a: &arrow::array::StringArray, r: usize) -> Option<&str> {
    (!a.is_null(r)).then(|| a.value(r))
}

/// Appends target rows as TDS ROW tokens for the MonitoringDB column types: DATETIME2(3),
/// INT NOT NULL, NVARCHAR ×2, DECIMAL(9,4), NVARCHAR, DECIMAL(18,4), INT NULL ×5.
pub fn encode_rows(rows: &RecordBatch, buf: &mut Vec<u8>) {
    let cols = rows.columns();
    let ts = cols[0].as_primitive::<TimestampMillisecondType>();
    let ids = cols[1].as_primitive::<Int32Type>();
    let strs = [cols[2].as_string::<i32>(), cols[3].as_string::<i32>(), cols[5].as_string::<i32>()];
    let cpu = cols[4].as_primitive::<Decimal128Type>();
    let wait = cols[6].as_primitive::<Decimal128Type>();
    let counters: Vec<_> = cols[7..12].iter().map(|c| c.as_primitive::<Int32Type>()).collect();
    buf.reserve(rows.num_rows() * 300);
    for r in 0..rows.num_rows() {
        buf.push(0xD1);
        // DATETIME2(3): length 7 = 4 bytes of ms in the day + 3 bytes of days since 0001-01-01.
        let ms = ts.value(r);
        let (days, in_day) = (ms.div_euclid(86_400_000) + DAYS_TO_UNIX_EPOCH, ms.rem_euclid(86_400_000));
        buf.push(7);
        buf.extend_from_slice(&(in_day as u32).to_le_bytes());
        buf.extend_from_slice(&(days as u32).to_le_bytes()[..3]);
        buf.extend_from_slice(&ids.value(r).to_le_bytes());
        put_nvarchar(buf, opt(strs[0], r));
        put_nvarchar(buf, opt(strs[1], r));
        put_decimal(buf, (!cpu.is_null(r)).then(|| cpu.value(r)), 4);
        put_nvarchar(buf, opt(strs[2], r));
        put_decimal(buf, (!wait.is_null(r)).then(|| wait.value(r)), 8);
        for c in &counters {
            put_intn(buf, (!c.is_null(r)).then(|| c.value(r)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_values_as_ms_tds_describes_them() {
        let mut buf = Vec::new();
        put_nvarchar(&mut buf, Some("Aé"));
        assert_eq!(buf, vec![4, 0, b'A', 0, 0xe9, 0]);
        buf.clear();
        put_nvarchar(&mut buf, None);
        assert_eq!(buf, vec![0xff, 0xff]);
        buf.clear();
        put_decimal(&mut buf, Some(-12_345), 4);
        assert_eq!(buf, vec![5, 0, 0x39, 0x30, 0, 0]);
        buf.clear();
        put_intn(&mut buf, Some(-1));
        assert_eq!(buf, vec![4, 0xff, 0xff, 0xff, 0xff]);
    }
}
