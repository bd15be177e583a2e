//! The MonitoringDB target of `perfcopy bench`: rows go to a scratch table
//! `dbo.perfcopy_bench_<pid>` that the load creates and drops, through the same writer as a
//! real load, so a benchmark measures the server and the network. dbo.Servers,
//! dbo.PerfSnapshotRun and the ledger are never touched: the scratch table holds nothing
//! before the load, knows no servers and records no watermarks.

use std::sync::Arc;

use crate::error::Result;
use crate::mssql::{runtime, ConnSpec};
use crate::schema::{target_columns, RUN};
use crate::sink::{FinalMark, Load, LoadWriter, SourceMeta, ThrowawayTarget};

use super::{BulkOptions, UnitWriter};

/// A scratch table in a MonitoringDB, created by the load and dropped at its end.
pub struct ScratchTable {
    conn: ConnSpec,
    label: String,
    options: BulkOptions,
    table: String,
}

impl ScratchTable {
    /// The scratch table `dbo.perfcopy_bench_<pid>` of this process; connects lazily.
    pub fn new(conn: ConnSpec, options: BulkOptions) -> ScratchTable {
        let table = format!("dbo.perfcopy_bench_{}", std::process::id());
        ScratchTable { label: format!("{} (scratch table {table})", conn.label()), conn, options, table }
    }
}

impl ThrowawayTarget for ScratchTable {
    fn label(&self) -> &str {
        &self.label
    }

    fn begin(&self, _workers: usize, sources: Vec<SourceMeta>, _children: &[crate::schema::ChildTable]) -> Result<Box<dyn Load>> {
        let ddl = format!(
            "CREATE TABLE {} ({} BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, {})",
            self.table,
            RUN.identity,
            target_columns()
                .iter()
                .map(|c| format!("{} {} {}", c.name, c.sql.sql_name(), if c.nullable { "NULL" } else { "NOT NULL" }))
                .collect::<Vec<_>>()
                .join(", ")
        );
        runtime()?.block_on(async {
            let mut client = self.conn.connect().await?;
            client.execute(ddl.as_str(), &[]).await.map_err(|e| self.conn.sql_error("creating the scratch table", e))?;
            Ok(())
        })?;
        Ok(Box::new(ScratchLoad { conn: self.conn.clone(), options: self.options.clone(), sources: Arc::new(sources), table: self.table.clone() }))
    }
}

/// A load into the scratch table; commit and abort both drop it.
struct ScratchLoad {
    conn: ConnSpec,
    options: BulkOptions,
    sources: Arc<Vec<SourceMeta>>,
    table: String,
}

impl ScratchLoad {
    fn drop_table(&self) -> Result<()> {
        let sql = format!("DROP TABLE {}", self.table);
        runtime()?.block_on(async {
            let mut client = self.conn.connect().await?;
            client.execute(sql.as_str(), &[]).await.map_err(|e| self.conn.sql_error("dropping the scratch table", e))?;
            Ok(())
        })
    }
}

impl Load for ScratchLoad {
    fn writer(&self, _worker: usize) -> Result<Box<dyn LoadWriter>> {
        Ok(Box::new(UnitWriter::new(self.conn.clone(), self.options.clone(), self.sources.clone(), self.table.clone(), None)?))
    }

    fn commit(self: Box<Self>, _marks: Vec<FinalMark>) -> Result<()> {
        self.drop_table()
    }

    fn abort(self: Box<Self>, _reason: &str) {
        if let Err(e) = self.drop_table() {
            tracing::warn!("could not drop the scratch table {}: {e}", self.table);
        }
    }
}
