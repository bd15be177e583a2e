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
//! the stream pass sends everything through.
//!
//! ```text
//!  layers (each imports only the ones below it)
//!  app        one module per command: plan -> run -> report
//!  config     flags + --config -> plans that open sources and targets       cli: the flags
//!  pipeline   copy/{keys,hot,stream,report}, watermark, verify, bench, progress
//!  sink       Target: stage, mssql/{target,writer,ledger,existing,scratch}, null
//!  source     Source: parquet, mssql, synthetic; normalize
//!  transform  remap, dedupe, window        mssql: connections        tds: decode, arrow, encode
//!  schema     the table description (RUN) and the type table;  defaults;  error
//! ```
//!
//! **Adding a source**: implement [`source::Source`] (yield batches in
//! [`schema::source_schema`] or, for the key pass, [`schema::key_schema`]) and teach
//! [`source::open_sources`] its `--from` syntax. **Adding a target**: implement
//! [`sink::Target`] (registry, existing keys, watermarks, and a [`sink::Load`] that becomes
//! visible at commit) and open it in [`config`]. **Adding a table**: describe it as a
//! [`schema::Table`]; its columns, types, key and stage folder come from the description.

pub mod app;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod defaults;
pub mod error;
pub mod mssql;
pub mod pipeline;
pub mod schema;
pub mod sink;
pub mod source;
pub mod tds;
pub mod transform;

pub use error::{Error, Result};
