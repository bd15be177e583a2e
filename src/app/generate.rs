//! `perfcopy generate`: synthetic DBATools exports, one Parquet file per server.

use crate::cli::GenerateArgs;
use crate::config;
use crate::error::Result;
use crate::pipeline::progress::{Progress, ProgressMode};
use crate::source::synthetic::write_parquet_sources;

pub(super) fn run(a: &GenerateArgs) -> Result<()> {
    let spec = config::generate_spec(a)?;
    let progress = Progress::new(ProgressMode::Auto);
    let bar = progress.phase("generate", Some(spec.plan().iter().map(|p| p.rows()).sum()));
    let paths = write_parquet_sources(&spec, &a.out, |n| bar.inc(n as u64))?;
    bar.finish();
    eprintln!("wrote {} source files to {}", paths.len(), a.out.display());
    Ok(())
}

