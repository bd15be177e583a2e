//! perfcopy moves SQL Server monitoring history (`DBATools.dbo.PerfSnapshotRun`) from many
//! sources into one central store, remapping `ServerID` and keeping exactly one row per
//! (SnapshotUTC, ServerID).
//!
//! ```text
//!  sources (one reader thread each, up to --readers)      transforms              target
//!  ┌───────────────┐                                ┌───────────────────┐   ┌──────────────┐
//!  │ Parquet file  │──batches──┐                    │ window filter     │   │ writer 1     │
//!  │ Parquet file  │──batches──┼─► remap ServerID ─►│ dedupe (hot days) │──►│ writer 2 ... │─► commit
//!  │ (SQL Server)  │──batches──┘   (by ServerName)  └───────────────────┘   └──────────────┘
//!  └───────────────┘                 bounded crossbeam channels between every stage
//! ```
//! A copy makes three passes (see [`pipeline::copy`]): a key pass finds every server name and
//! where sources overlap, a hot-row pass picks the survivor of every key that can collide, and
//! the copy pass streams everything through.
//!
//! **Adding a source**: implement [`source::Source`] (yield batches in
//! [`schema::source_schema`] or, for the key pass, [`schema::key_schema`]) and teach
//! [`source::open_sources`] its `--from` syntax. **Adding a target**: implement
//! [`sink::Target`] (registry, existing keys, watermarks, and a [`sink::Load`] that becomes
//! visible at commit).

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod mssql;
pub mod pipeline;
pub mod schema;
pub mod sink;
pub mod source;
pub mod tds;
pub mod transform;

pub use error::{Error, Result};
