//! The MonitoringDB target of `perfcopy bench`: rows go to a scratch table
//! `dbo.perfcopy_bench_<pid>` that the load creates and drops, through the same writer as a
//! real load, so a benchmark measures the server and the network. dbo.Servers,
//! dbo.PerfSnapshotRun and the ledger are never touched: the scratch table holds nothing
//! before the load, knows no servers and records no watermarks.
//!
//! With child tables (`bench --child-tables`), each gets a scratch table of its own,
//! `dbo.perfcopy_bench_<pid>_<Table>` (the columns MonitoringDB's table has), and the runs'
//! scratch table has MonitoringDB's `(ServerID, SnapshotUTC)` index (as a UNIQUE constraint),
//! which the writer's lookup of the new run IDs uses, as it does in a real load.

use std::sync::Arc;

use crate::error::Result;
use crate::mssql::{runtime, ConnSpec};
use crate::schema::{target_columns, RUN};
use crate::schema::ChildTable;
use crate::sink::{FinalMark, Load, LoadWriter, SourceMeta, ThrowawayTarget};

use super::{BulkOptions, UnitWriter};

/// A scratch table in a MonitoringDB, created by the load and dropped at its end.
pub struct ScratchTable {
    conn: ConnSpec,
    label: String,
    options: BulkOptions,
    table: String,
}

/// The scratch copy of child table `t` for the scratch run table named `base` (without `dbo.`).
fn scratch_child(base: &str, t: &ChildTable) -> ChildTable {
    let name: &'static str = Box::leak(format!("{base}_{}", t.name).into_boxed_str());
    ChildTable { name, values: t.values, identity: t.identity }
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

    fn begin(&self, _workers: usize, sources: Vec<SourceMeta>, children: &[ChildTable]) -> Result<Box<dyn Load>> {
        let base = self.table.trim_start_matches("dbo.");
        let mut cols: Vec<String> = target_columns().iter().map(|c| format!("{} {} {}", c.name, c.sql.sql_name(), if c.nullable { "NULL" } else { "NOT NULL" })).collect();
        if !children.is_empty() {
            cols.push(format!("CONSTRAINT [UQ_{base}] UNIQUE ({}, {})", RUN.server_id, RUN.snapshot_time));
        }
        let run_ddl = format!("CREATE TABLE {} ({} BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY, {})", self.table, RUN.identity, cols.join(", "));
        let scratch: Vec<ChildTable> = children.iter().map(|t| scratch_child(base, t)).collect();
        let mut ddl = vec![(self.table.clone(), run_ddl)];
        for t in &scratch {
            ddl.push((t.sql_name(), super::create_table_sql(t).map_err(|m| self.conn.error(m))?));
        }
        let load = ScratchLoad { conn: self.conn.clone(), options: self.options.clone(), sources: Arc::new(sources), table: self.table.clone(), children: Arc::new(scratch), created: std::sync::Mutex::new(Vec::new()) };
        runtime()?.block_on(async {
            let mut client = self.conn.connect().await?;
            for (table, sql) in &ddl {
                client.execute(sql.as_str(), &[]).await.map_err(|e| self.conn.sql_error(&format!("creating the scratch table {table}"), e))?;
                if let Ok(mut c) = load.created.lock() {
                    c.push(table.clone());
                }
            }
            Ok::<(), crate::error::Error>(())
        })
        .inspect_err(|_| load.drop_tables())?;
        Ok(Box::new(load))
    }
}

/// A load into the scratch tables; commit and abort both drop them.
struct ScratchLoad {
    conn: ConnSpec,
    options: BulkOptions,
    sources: Arc<Vec<SourceMeta>>,
    table: String,
    /// The scratch copies of the child tables the units carry, in the units' order.
    children: Arc<Vec<ChildTable>>,
    /// The scratch tables created so far (the runs' first), dropped in reverse.
    created: std::sync::Mutex<Vec<String>>,
}

impl ScratchLoad {
    /// Drops every scratch table created (child tables first); one that cannot be dropped is
    /// reported and the others are still dropped.
    fn drop_tables(&self) {
        let tables: Vec<String> = self.created.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
        let dropped = runtime().and_then(|rt| {
            rt.block_on(async {
                let mut client = self.conn.connect().await?;
                for t in tables.iter().rev() {
                    if let Err(e) = client.execute(format!("DROP TABLE {t}").as_str(), &[]).await {
                        tracing::warn!("could not drop the scratch table {t}: {}", self.conn.sql_error("dropping a scratch table", e));
                    }
                }
                Ok(())
            })
        });
        if let Err(e) = dropped {
            tracing::warn!("could not drop the scratch tables {}: {e}", tables.join(", "));
        }
    }
}

impl Load for ScratchLoad {
    fn writer(&self, _worker: usize) -> Result<Box<dyn LoadWriter>> {
        Ok(Box::new(UnitWriter::new(self.conn.clone(), self.options.clone(), self.sources.clone(), self.table.clone(), None)?.with_children(self.children.clone())))
    }

    fn commit(self: Box<Self>, _marks: Vec<FinalMark>) -> Result<()> {
        self.drop_tables();
        Ok(())
    }

    fn abort(self: Box<Self>, _reason: &str) {
        self.drop_tables();
    }
}
